"""Export the student to SavedModel and TFLite/LiteRT, checked against Keras.

Both functions take the student (a `Distiller` is replaced by its student,
never exported whole), write atomically, and return an `ExportReport` that
says how big the file is and how closely it reproduces the Keras model.
"""

import dataclasses
import json
import os
import statistics
import tempfile
import time
import warnings

import numpy as np

from keras_distill.utils import atomic_path
from keras_distill.utils import input_shape as _model_input_shape
from keras_distill.utils import quiet_native_output
from keras_distill.utils import write_bytes

QUANTIZE_MODES = (None, "float16", "dynamic", "int8")
REPRESENTATIVE_SAMPLES = 200


@dataclasses.dataclass
class ExportReport:
    """What an export wrote and how well it matches Keras.

    Attributes:
        path: The written file (or SavedModel folder).
        format: `"saved_model"` or `"tflite"`.
        quantize: The quantization mode (`None` for float32).
        bytes: Size on disk (a folder's total for a SavedModel).
        float32_bytes: Size of the float32 TFLite file of the same model
            (None for a SavedModel).
        size_ratio: `bytes / float32_bytes` (None for a SavedModel).
        compared: How many inputs were compared with Keras.
        max_abs_diff: Largest |Keras − exported| over those outputs (after
            dequantization for int8 outputs).
        argmax_agreement: Share of inputs whose predicted class agrees.
        accuracy: Accuracy of the exported model on the labelled check data,
            or None.
        keras_accuracy: Accuracy of the Keras model on the same data.
        latency_ms: Median single-thread latency per example in the LiteRT
            interpreter, after warm-up (None for a SavedModel).
        input_quantization: `(scale, zero_point)` of an int8 input, or None.
        output_quantization: `(scale, zero_point)` of an int8 output, or None.
    """

    path: str
    format: str
    quantize: object = None
    bytes: int = 0
    float32_bytes: object = None
    size_ratio: object = None
    compared: int = 0
    max_abs_diff: object = None
    argmax_agreement: object = None
    accuracy: object = None
    keras_accuracy: object = None
    latency_ms: object = None
    input_quantization: object = None
    output_quantization: object = None

    def to_dict(self):
        """The report as a JSON-serializable dict."""
        return dataclasses.asdict(self)

    def to_json(self, indent=2):
        """The report as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent)


def _student(model):
    """The model to export and its input specs (`InputSpecs`)."""
    import keras

    from keras_distill.distiller import Distiller

    if isinstance(model, Distiller):
        model = model.student
    if not isinstance(model, keras.Model):
        raise ValueError(
            "Invalid value for argument `model`. Expected a `keras.Model` "
            "or a `keras_distill.Distiller`. Received: "
            f"model={model!r} of type {type(model).__name__}"
        )
    specs = InputSpecs.of(model)
    if specs is None:
        shape = _model_input_shape(model)
        raise ValueError(
            "Invalid value for argument `model`. Expected a model with a "
            "defined input shape (a Functional or Sequential model, or a "
            "subclassed model built with `model.build(input_shape)`). "
            f"Received: {model.name!r} with input shape {shape}"
        )
    return _float32_compute(model), specs


class InputSpecs:
    """A model's inputs: names, shapes and dtypes, and how to feed them.

    Attributes:
        kind: `"single"`, `"list"` or `"dict"`, as the model takes them.
        names: The signature's input names, in the model's order.
        shapes: Shapes (batch axis first) by name.
        dtypes: dtypes by name (`"float32"`, `"int32"`, ...).
    """

    def __init__(self, kind, names, shapes, dtypes):
        self.kind = kind
        self.names = list(names)
        self.shapes = dict(shapes)
        self.dtypes = dict(dtypes)

    @classmethod
    def of(cls, model):
        """The specs of a built model, or None if a shape is unknown."""
        try:
            inputs = model.input
        except (AttributeError, ValueError):
            inputs = None
        if inputs is None or isinstance(model, _sequential()):
            shape = _model_input_shape(model)
            if shape is None:
                return None
            dtype = _dtype(getattr(model, "inputs", None) or [None])
            inputs, kind = {"inputs": (shape, dtype)}, "single"
        elif isinstance(inputs, dict):
            kind = "dict"
            inputs = {
                k: (tuple(v.shape), _dtype([v])) for k, v in inputs.items()
            }
        elif isinstance(inputs, (list, tuple)):
            kind = "list"
            inputs = {t.name: (tuple(t.shape), _dtype([t])) for t in inputs}
        else:
            kind = "single"
            inputs = {"inputs": (tuple(inputs.shape), _dtype([inputs]))}
        for shape, _ in inputs.values():
            if any(d is None for d in shape[1:]):
                return None
        return cls(
            kind,
            inputs,
            {k: v[0] for k, v in inputs.items()},
            {k: v[1] for k, v in inputs.items()},
        )

    def signature(self):
        """The `input_signature` for `keras.Model.export`."""
        import tensorflow as tf

        specs = {
            name: tf.TensorSpec(self.shapes[name], self.dtypes[name], name)
            for name in self.names
        }
        if self.kind == "single":
            return [specs[self.names[0]]]
        if self.kind == "list":
            return [[specs[name] for name in self.names]]
        return [specs]

    def by_name(self, x):
        """Inputs as a dict by signature name, each in its dtype."""
        if self.kind == "dict":
            if not isinstance(x, dict):
                raise ValueError(
                    "Invalid data. Expected a dict of inputs with the keys "
                    f"{self.names}. Received: {type(x).__name__}"
                )
            x = {k: x[k] for k in self.names}
        elif self.kind == "list":
            x = dict(zip(self.names, x))
        else:
            x = {self.names[0]: x}
        return {k: np.asarray(v).astype(self.dtypes[k]) for k, v in x.items()}

    def as_model_input(self, named):
        """The dict of `by_name` back in the structure the model takes."""
        if self.kind == "dict":
            return named
        if self.kind == "list":
            return [named[k] for k in self.names]
        return named[self.names[0]]

    def zeros(self, batch=1):
        """A batch of zeros of every input, by name."""
        return {
            k: np.zeros((batch,) + tuple(self.shapes[k][1:]), self.dtypes[k])
            for k in self.names
        }


def _sequential():
    import keras

    return keras.Sequential


def _dtype(tensors):
    tensor = tensors[0] if tensors else None
    return str(getattr(tensor, "dtype", None) or "float32")


def _float32_compute(model):
    """`model`, or a float32-compute twin of a mixed-precision model.

    A `mixed_float16` / `mixed_bfloat16` student computes in half
    precision, which TFLite cannot take without TF Select ops; its weights
    are float32 already, so a clone whose layers compute in float32 holds
    exactly the same weights and converts with the builtin ops.
    """
    import keras

    if all(
        getattr(layer, "compute_dtype", "float32") == "float32"
        for layer in _all_layers(model)
    ):
        return model

    def clone(layer):
        config = layer.get_config()
        config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    try:
        twin = keras.models.clone_model(model, clone_function=clone)
    except Exception as error:  # a subclassed model cannot be cloned
        raise ValueError(
            "Invalid value for argument `model`. Expected a float32 model, "
            "or a Functional/Sequential mixed-precision model that can be "
            "cloned to compute in float32 for TFLite. Received: "
            f"{model.name!r}, which computes in "
            f"{model.compute_dtype} and cannot be cloned ({error})"
        ) from None
    twin.set_weights(model.get_weights())
    return twin


def _all_layers(model):
    """Every layer of a model, nested models' layers included."""
    for layer in getattr(model, "layers", []):
        yield layer
        yield from _all_layers(layer)


def _export_saved_model(model, specs, folder):
    model.export(
        folder,
        format="tf_saved_model",
        verbose=False,
        input_signature=specs.signature(),
    )


def _examples(data, specs, limit=None):
    """Inputs by signature name (and labels when present) from many forms.

    Args:
        data: An array or a dict of arrays, `(x, y)`, a `tf.data.Dataset`
            of `x` or `(x, y)` batches.
        specs: The model's `InputSpecs`.
        limit: Keep at most this many examples.

    Returns:
        `(inputs by name, labels or None)`.
    """
    import keras

    labels = None
    if isinstance(data, str):
        raise TypeError(
            "Invalid data. Expected an array, `(x, y)` arrays or a "
            f"tf.data.Dataset. Received: the string {data!r}. For a named "
            "dataset, load it first: `keras_distill.app.datasets."
            "load_arrays(name).x_test`."
        )
    if isinstance(data, tuple) and len(data) == 2:
        x, labels = data[0], np.asarray(data[1])
    elif isinstance(data, (np.ndarray, dict, list)):
        x = data
    else:
        xs, ys = [], []
        count = 0
        for batch in data:
            if isinstance(batch, tuple):
                xs.append(batch[0])
                if len(batch) > 1:
                    ys.append(np.asarray(batch[1]))
            else:
                xs.append(batch)
            count += len(keras.tree.flatten(xs[-1])[0])
            if limit and count >= limit:
                break
        if not xs:
            raise ValueError("Invalid data. Expected examples. Received: none")
        x = keras.tree.map_structure(
            lambda *parts: np.concatenate([np.asarray(p) for p in parts]),
            *xs,
        )
        labels = np.concatenate(ys) if ys else None
    named = specs.by_name(x)
    if limit:
        named = {k: v[:limit] for k, v in named.items()}
        labels = labels[:limit] if labels is not None else None
    if labels is not None and labels.ndim > 1:
        labels = labels.argmax(axis=-1)
    return named, labels


def _outputs(values):
    """A model's outputs as a list of float32 arrays."""
    import keras

    if isinstance(values, dict):
        values = [values[k] for k in sorted(values)]
    return [
        np.asarray(keras.ops.convert_to_numpy(v), "float32")
        for v in keras.tree.flatten(values)
    ]


def _keras_outputs(model, specs, named, batch_size=256):
    """The Keras model's outputs for inputs by name, in eager batches."""
    n = len(next(iter(named.values())))
    parts = []
    for start in range(0, n, batch_size):
        batch = {k: v[start : start + batch_size] for k, v in named.items()}
        parts.append(
            _outputs(model(specs.as_model_input(batch), training=False))
        )
    return [np.concatenate(p) for p in zip(*parts)]


def saved_model(model, path, check_data=None):
    """Exports a model as a TensorFlow SavedModel for serving.

    The SavedModel has a `serving_default` signature with a dynamic batch
    dimension, and is checked after writing: it is reloaded with
    `tf.saved_model.load` and its signature's outputs are compared with
    Keras'.

    Args:
        model: A `keras.Model`, or a `keras_distill.Distiller` (its student
            is exported; the teacher never is).
        path: The SavedModel folder to write (replaced if it exists).
        check_data: Inputs to compare on: an array, `(x, y)` arrays, a
            `tf.data.Dataset`. Defaults to 7 random
            inputs, enough to check the signature and the batch axis.

    Returns:
        An `ExportReport`.

    Raises:
        ValueError: If the model has no defined input shape.
        OSError: If the folder cannot be written.

    Example:

    ```python
    report = keras_distill.export.saved_model(distiller, "student_savedmodel")
    print(report.max_abs_diff)
    ```
    """
    import tensorflow as tf

    model, specs = _student(model)
    path = os.fspath(path)
    if check_data is None:
        rng = np.random.default_rng(0)
        named = {
            k: _random_inputs(rng, (7,) + specs.shapes[k][1:], specs.dtypes[k])
            for k in specs.names
        }
        labels = None
    else:
        named, labels = _examples(check_data, specs, limit=1000)
    with atomic_path(path, directory=True) as tmp:
        with quiet_native_output():
            _export_saved_model(model, specs, tmp)
            loaded = tf.saved_model.load(tmp)
        signature = loaded.signatures["serving_default"]
        outputs = signature(**{k: tf.constant(v) for k, v in named.items()})
        exported = [outputs[k].numpy() for k in _ordered(outputs)]
        expected = _keras_outputs(model, specs, named)
        report = ExportReport(path=path, format="saved_model", bytes=_size(tmp))
        _compare(report, expected, exported, labels)
    return report


def _random_inputs(rng, shape, dtype):
    if np.issubdtype(np.dtype(dtype), np.integer):
        return rng.integers(0, 2, shape).astype(dtype)
    return rng.random(shape).astype(dtype)


def _ordered(names):
    """Output names in their order: `output_2` before `output_10`."""

    def key(name):
        stem, _, number = name.rpartition("_")
        return (stem, int(number)) if number.isdigit() else (name, -1)

    return sorted(names, key=key)


def tflite(
    model,
    path,
    quantize=None,
    representative_data=None,
    int8_io=False,
    check_data=None,
    latency_runs=200,
    measure_float32=False,
):
    """Exports a model to a TFLite/LiteRT flatbuffer, checked against Keras.

    Any trained student converts: integer token inputs (representative and
    check data are fed in each input's own dtype), dict or list inputs,
    several outputs (each compared), and `mixed_float16` /
    `mixed_bfloat16` students (converted from a float32-compute twin with
    the same weights, since TFLite's builtin ops compute in float32). The
    file is written only once it converted and ran the check in the LiteRT
    interpreter; if either fails, the error is raised and `path` is left as
    it was.

    Args:
        model: A `keras.Model`, or a `keras_distill.Distiller` (its student
            is exported; the teacher never is).
        path: The `.tflite` file to write.
        quantize: `None` (float32), `"float16"` (float16 weights),
            `"dynamic"` (int8 weights, float activations) or `"int8"` (full
            integer: weights and activations, calibrated on
            `representative_data`).
        representative_data: Real inputs for int8 calibration: an array,
            `(x, y)` arrays or a `tf.data.Dataset` of `x` or `(x, y)`
            batches. Up to 200 examples
            are used. Required for `"int8"`.
        int8_io: With `"int8"`, make the model's input and output int8 too
            (the scale and zero point are in the report); otherwise they
            stay float32.
        check_data: Inputs to compare the file with Keras on: the same forms
            as `representative_data`; labelled data also gives accuracy.
            Defaults to `representative_data`.
        latency_runs: Timed single-example runs for the latency median.
        measure_float32: Whether a quantized export also converts the
            float32 model, to report `float32_bytes` and `size_ratio`
            (one more conversion). Defaults to False: both stay None.

    Returns:
        An `ExportReport`.

    Raises:
        ValueError: For an unknown `quantize` mode, `"int8"` without
            representative data, `int8_io` without `"int8"`, or a model with
            no defined input shape.
        OSError: If the file's folder cannot be written. Nothing is left
            behind on failure.

    Example:

    ```python
    report = keras_distill.export.tflite(
        distiller.student,
        "student_int8.tflite",
        quantize="int8",
        representative_data=x_train[:200],
        check_data=(x_test, y_test),
    )
    print(report.bytes, report.argmax_agreement, report.latency_ms)
    ```
    """
    if quantize not in QUANTIZE_MODES:
        raise ValueError(
            "Invalid value for argument `quantize`. Expected one of "
            f"{list(QUANTIZE_MODES)}. Received: quantize={quantize!r}"
        )
    if quantize == "int8" and representative_data is None:
        raise ValueError(
            "Invalid arguments: `quantize='int8'` needs "
            "`representative_data`, real inputs to calibrate the activation "
            "ranges (an array or a tf.data.Dataset). "
            "Received: representative_data=None"
        )
    if int8_io and quantize != "int8":
        raise ValueError(
            "Invalid arguments: `int8_io=True` needs `quantize='int8'`. "
            f"Received: quantize={quantize!r}"
        )
    model, specs = _student(model)
    path = os.fspath(path)
    calibration = None
    if representative_data is not None:
        calibration, _ = _examples(
            representative_data, specs, limit=REPRESENTATIVE_SAMPLES
        )
    content = convert(model, specs, quantize, calibration, int8_io)
    report = ExportReport(path=path, format="tflite", quantize=quantize)
    check = check_data if check_data is not None else representative_data
    # The file takes its name only once it converted and ran: a failed
    # check leaves the previous file (or none), never a half-good one.
    with atomic_path(path) as tmp:
        write_bytes(tmp, content)
        report.bytes = os.path.getsize(tmp)
        if quantize is None:
            report.float32_bytes = report.bytes
        elif measure_float32:
            report.float32_bytes = len(convert(model, specs, None, None, False))
        if report.float32_bytes:
            report.size_ratio = report.bytes / report.float32_bytes
        runner = Runner(tmp)
        report.input_quantization = runner.input_quantization
        report.output_quantization = runner.output_quantization
        if check is not None:
            named, labels = _examples(check, specs, limit=1000)
            expected = _keras_outputs(model, specs, named)
            _compare(report, expected, runner.predict_outputs(named), labels)
            first = {k: v[:1] for k, v in named.items()}
        else:
            first = specs.zeros()
        report.latency_ms = runner.latency_ms(first, runs=latency_runs)
    runner.path = path
    return report


def convert(model, specs, quantize=None, calibration=None, int8_io=False):
    """Converts a Keras model to TFLite flatbuffer bytes.

    Args:
        model: A `keras.Model` with a defined input shape.
        specs: Its `InputSpecs` (or, for one input, its input shape).
        quantize: One of `QUANTIZE_MODES`.
        calibration: Real inputs by signature name (or one array), for
            `"int8"`.
        int8_io: Whether float inputs and outputs are int8 (with `"int8"`).

    Returns:
        The flatbuffer as `bytes`.
    """
    import tensorflow as tf

    if not isinstance(specs, InputSpecs):
        specs = InputSpecs.of(model)
    if calibration is not None and not isinstance(calibration, dict):
        calibration = specs.by_name(calibration)
    with tempfile.TemporaryDirectory() as folder, quiet_native_output():
        _export_saved_model(model, specs, folder)
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        return _convert(converter, quantize, calibration, int8_io)


def _convert(converter, quantize, calibration, int8_io):
    import tensorflow as tf

    if quantize is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        count = len(next(iter(calibration.values())))

        def representative():
            for i in range(count):
                if len(calibration) == 1:  # positional: no extra interpreter
                    yield [v[i : i + 1] for v in calibration.values()]
                else:
                    yield {k: v[i : i + 1] for k, v in calibration.items()}

        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8
        ]
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    with warnings.catch_warnings():
        # Named calibration inputs make TensorFlow's calibrator open its own
        # (deprecated) tf.lite.Interpreter; nothing for the user to change.
        warnings.filterwarnings("ignore", "(?s).*tf.lite.Interpreter is dep")
        return converter.convert()


class Runner:
    """Runs a `.tflite` file in the LiteRT interpreter, one example at a time.

    Inputs are fed by the model's signature, in their own dtypes (float
    inputs are quantized when the model's input is int8), and outputs are
    dequantized when int8, so `predict` takes and returns what Keras does.

    Args:
        path: The `.tflite` file.
        num_threads: Interpreter threads. Defaults to 1 (what latency
            figures assume).

    Example:

    ```python
    runner = keras_distill.export.Runner("student.tflite")
    logits = runner.predict(x_test[:10])
    ```
    """

    def __init__(self, path, num_threads=1):
        from keras_distill.utils import optional_import

        litert = optional_import(
            "ai_edge_litert.interpreter", "export", "Running a .tflite file"
        )
        Interpreter = litert.Interpreter

        self.path = os.fspath(path)
        with quiet_native_output():
            self.interpreter = Interpreter(
                model_path=self.path, num_threads=num_threads
            )
            self.interpreter.allocate_tensors()
        self.signature = self.interpreter.get_signature_runner()
        self._inputs = self.signature.get_input_details()
        self._outputs = self.signature.get_output_details()
        self.input_names = sorted(self._inputs)
        self.output_names = _ordered(self._outputs)

    @staticmethod
    def _quantization(detail):
        if detail["dtype"] in (np.int8, np.uint8):
            scale, zero_point = detail["quantization"]
            if scale:
                return float(scale), int(zero_point)
        return None

    @property
    def input_quantization(self):
        """`(scale, zero_point)` of the first int8 input, or None."""
        for name in self.input_names:
            q = self._quantization(self._inputs[name])
            if q is not None:
                return q
        return None

    @property
    def output_quantization(self):
        """`(scale, zero_point)` of the first int8 output, or None."""
        for name in self.output_names:
            q = self._quantization(self._outputs[name])
            if q is not None:
                return q
        return None

    def _feed(self, name, value):
        detail = self._inputs[name]
        q = self._quantization(detail)
        if q is not None and np.issubdtype(
            np.asarray(value).dtype, np.floating
        ):
            scale, zero_point = q
            info = np.iinfo(detail["dtype"])
            return np.clip(
                np.round(value / scale + zero_point), info.min, info.max
            ).astype(detail["dtype"])
        return np.asarray(value).astype(detail["dtype"])

    def _invoke(self, example):
        if not isinstance(example, dict):
            example = {self.input_names[0]: example}
        if set(example) != set(self._inputs):
            raise ValueError(
                "Invalid inputs for the TFLite model. Expected the inputs "
                f"{self.input_names}. Received: {sorted(example)}"
            )
        outputs = self.signature(
            **{k: self._feed(k, v) for k, v in example.items()}
        )
        values = []
        for name in self.output_names:
            out = outputs[name]
            q = self._quantization(self._outputs[name])
            if q is not None:
                scale, zero_point = q
                out = (out.astype("float32") - zero_point) * scale
            values.append(np.asarray(out, "float32"))
        return values

    def predict_outputs(self, x):
        """Every output for a batch, computed one example at a time.

        Args:
            x: An array (one input) or a dict of arrays by input name.

        Returns:
            A list of float32 arrays, one per output.
        """
        named = x if isinstance(x, dict) else {self.input_names[0]: x}
        n = len(next(iter(named.values())))
        rows = [
            self._invoke({k: v[i : i + 1] for k, v in named.items()})
            for i in range(n)
        ]
        return [np.concatenate(parts) for parts in zip(*rows)]

    def predict(self, x):
        """Outputs for a batch (the first output for several).

        Args:
            x: An array (one input) or a dict of arrays by input name;
                float inputs as float32, token inputs as integers.

        Returns:
            A float32 array: the model's output.
        """
        if not isinstance(x, dict):
            x = np.asarray(x)
            if np.issubdtype(x.dtype, np.floating):
                x = x.astype("float32")
        return self.predict_outputs(x)[0]

    def latency_ms(self, example, runs=200, warmup=20):
        """Median milliseconds of one single-example inference.

        Args:
            example: One input (or a dict of inputs) with a batch axis of 1.
            runs: Timed runs.
            warmup: Untimed runs first.

        Returns:
            The median, in milliseconds.
        """
        if not isinstance(example, dict):
            example = np.asarray(example)
        for _ in range(warmup):
            self._invoke(example)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            self._invoke(example)
            times.append(time.perf_counter() - start)
        return 1000.0 * statistics.median(times)


def _compare(report, expected, exported, labels):
    """Fills the report's parity fields from lists of outputs."""
    expected = [np.asarray(e, "float32") for e in expected]
    exported = [
        np.asarray(x, "float32").reshape(e.shape)
        for e, x in zip(expected, exported)
    ]
    report.compared = int(len(expected[0]))
    report.max_abs_diff = float(
        max(np.abs(e - x).max() for e, x in zip(expected, exported))
    )
    classes = [(e, x) for e, x in zip(expected, exported) if e.shape[-1] > 1]
    if classes:
        report.argmax_agreement = float(
            np.mean([np.mean(e.argmax(-1) == x.argmax(-1)) for e, x in classes])
        )
    if labels is not None and classes:
        e, x = classes[0]
        labels = np.asarray(labels).reshape(x.shape[:-1])
        report.accuracy = float(np.mean(x.argmax(-1) == labels))
        report.keras_accuracy = float(np.mean(e.argmax(-1) == labels))


def _size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def generate(model, prompt, max_new_tokens, pad_id=0):
    """Greedy decoding with a causal LM of a fixed window, in Keras or LiteRT.

    The model takes `(batch, window)` int token ids and returns
    `(batch, window, vocabulary)` logits, position n seeing tokens 0..n
    only (a causal model), as a language model exported to TFLite does:
    its input has a fixed length. The prompt is placed at the start of
    the window, padded with `pad_id`; the next token is the argmax of the
    logits at the prompt's last position. Past the window, its last
    `window` tokens are kept (a sliding window).

    Args:
        model: A `keras.Model`, a `.tflite` path or a `Runner`.
        prompt: A non-empty sequence of int token ids.
        max_new_tokens: How many tokens to generate (an int >= 0).
        pad_id: The token that fills the window after the prompt.

    Returns:
        The list of token ids: the prompt, then the generated tokens.

    Raises:
        ValueError: If the prompt is empty, `max_new_tokens` is negative, or
            the model's input has no fixed window length.

    Example:

    ```python
    tokens = keras_distill.export.generate(
        "saved_models/student_lm.tflite", list(b"def "), max_new_tokens=40
    )
    print(bytes(tokens).decode(errors="replace"))
    ```
    """
    import keras

    from keras_distill.validation import check_int

    check_int("max_new_tokens", max_new_tokens)
    tokens = [int(t) for t in prompt]
    if not tokens:
        raise ValueError(
            "Invalid value for argument `prompt`. Expected at least one "
            "token id. Received: prompt=[]"
        )
    if isinstance(model, keras.Model):
        window = model.inputs[0].shape[1]

        def next_logits(ids):
            return keras.ops.convert_to_numpy(model(ids, training=False))

    else:
        runner = model if isinstance(model, Runner) else Runner(model)
        window = int(runner._inputs[runner.input_names[0]]["shape"][1])
        next_logits = runner.predict
    if not window:
        raise ValueError(
            "Invalid model for `generate`. Expected an input of a fixed "
            "window length, (batch, window). Received: an input of shape "
            f"{tuple(model.inputs[0].shape)}"
        )
    for _ in range(max_new_tokens):
        context = tokens[-window:]
        ids = np.full((1, window), pad_id, np.int32)
        ids[0, : len(context)] = context
        logits = next_logits(ids)
        tokens.append(int(np.argmax(logits[0, len(context) - 1])))
    return tokens
