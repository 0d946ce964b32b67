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

import numpy as np

from keras_distill.utils import atomic_path
from keras_distill.utils import input_shape as _model_input_shape
from keras_distill.utils import predict
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
    shape = _model_input_shape(model)
    if shape is None or any(d is None for d in shape[1:]):
        raise ValueError(
            "Invalid value for argument `model`. Expected a model with a "
            "defined input shape (a Functional or Sequential model, or a "
            "subclassed model built with `model.build(input_shape)`). "
            f"Received: {model.name!r} with input shape {shape}"
        )
    return model, shape


def _input_dtype(model):
    inputs = getattr(model, "inputs", None)
    return inputs[0].dtype if inputs else "float32"


def _export_saved_model(model, shape, folder):
    import tensorflow as tf

    spec = tf.TensorSpec(shape, _input_dtype(model), name="inputs")
    model.export(
        folder, format="tf_saved_model", verbose=False, input_signature=[spec]
    )


def _examples(data, limit=None):
    """Inputs (and labels when present) as NumPy arrays from many forms."""
    labels = None
    if isinstance(data, str):
        from keras_distill.data import load_arrays

        arrays = load_arrays(data)
        x, labels = arrays.x_test, arrays.y_test
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, labels = np.asarray(data[0]), np.asarray(data[1])
    elif isinstance(data, np.ndarray):
        x = data
    else:
        xs, ys = [], []
        count = 0
        for batch in data:
            if isinstance(batch, (tuple, list)):
                xs.append(np.asarray(batch[0]))
                if len(batch) > 1:
                    ys.append(np.asarray(batch[1]))
            elif isinstance(batch, dict):
                raise ValueError(
                    "Invalid data. Expected a dataset of `x` or `(x, y)` "
                    "batches. Received: a dataset of dicts"
                )
            else:
                xs.append(np.asarray(batch))
            count += len(xs[-1])
            if limit and count >= limit:
                break
        if not xs:
            raise ValueError("Invalid data. Expected examples. Received: none")
        x = np.concatenate(xs)
        labels = np.concatenate(ys) if ys else None
    if limit:
        x = x[:limit]
        labels = labels[:limit] if labels is not None else None
    if labels is not None and labels.ndim > 1:
        labels = labels.argmax(axis=-1)
    return x.astype("float32"), labels


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
            `tf.data.Dataset` or a data source name. Defaults to 7 random
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

    model, shape = _student(model)
    path = os.fspath(path)
    dtype = _input_dtype(model)
    with atomic_path(path, directory=True) as tmp, quiet_native_output():
        _export_saved_model(model, shape, tmp)
    if check_data is None:
        rng = np.random.default_rng(0)
        x, labels = rng.random((7,) + shape[1:]).astype("float32"), None
    else:
        x, labels = _examples(check_data, limit=1000)
    with quiet_native_output():
        loaded = tf.saved_model.load(path)
    signature = loaded.signatures["serving_default"]
    (name,) = signature.structured_input_signature[1]
    outputs = signature(**{name: tf.constant(x, dtype=dtype)})
    exported = next(iter(outputs.values())).numpy()
    expected = predict(model, x)
    report = ExportReport(path=path, format="saved_model", bytes=_size(path))
    _compare(report, expected, exported, labels)
    return report


def tflite(
    model,
    path,
    quantize=None,
    representative_data=None,
    int8_io=False,
    check_data=None,
    latency_runs=200,
):
    """Exports a model to a TFLite/LiteRT flatbuffer, checked against Keras.

    Args:
        model: A `keras.Model`, or a `keras_distill.Distiller` (its student
            is exported; the teacher never is).
        path: The `.tflite` file to write.
        quantize: `None` (float32), `"float16"` (float16 weights),
            `"dynamic"` (int8 weights, float activations) or `"int8"` (full
            integer: weights and activations, calibrated on
            `representative_data`).
        representative_data: Real inputs for int8 calibration: an array,
            `(x, y)` arrays, a `tf.data.Dataset` of `x` or `(x, y)` batches,
            or a data source name such as `"mnist5k"`. Up to 200 examples
            are used. Required for `"int8"`.
        int8_io: With `"int8"`, make the model's input and output int8 too
            (the scale and zero point are in the report); otherwise they
            stay float32.
        check_data: Inputs to compare the file with Keras on: the same forms
            as `representative_data`; labelled data also gives accuracy.
            Defaults to `representative_data`.
        latency_runs: Timed single-example runs for the latency median.

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
            "ranges (an array, a tf.data.Dataset or a data source name). "
            "Received: representative_data=None"
        )
    if int8_io and quantize != "int8":
        raise ValueError(
            "Invalid arguments: `int8_io=True` needs `quantize='int8'`. "
            f"Received: quantize={quantize!r}"
        )
    model, shape = _student(model)
    path = os.fspath(path)
    calibration = None
    if representative_data is not None:
        calibration, _ = _examples(
            representative_data, limit=REPRESENTATIVE_SAMPLES
        )
    content = convert(model, shape, quantize, calibration, int8_io)
    write_bytes(path, content)

    report = ExportReport(path=path, format="tflite", quantize=quantize)
    report.bytes = os.path.getsize(path)
    if quantize is None:
        report.float32_bytes = report.bytes
    else:
        report.float32_bytes = len(convert(model, shape, None, None, False))
    report.size_ratio = report.bytes / report.float32_bytes

    runner = Runner(path)
    report.input_quantization = runner.input_quantization
    report.output_quantization = runner.output_quantization
    check = check_data if check_data is not None else representative_data
    if check is not None:
        x, labels = _examples(check, limit=1000)
        expected = predict(model, x)
        _compare(report, expected, runner.predict(x), labels)
        report.latency_ms = runner.latency_ms(x[:1], runs=latency_runs)
    else:
        sample = np.zeros((1,) + shape[1:], "float32")
        report.latency_ms = runner.latency_ms(sample, runs=latency_runs)
    return report


def convert(model, shape, quantize=None, calibration=None, int8_io=False):
    """Converts a Keras model to TFLite flatbuffer bytes.

    Args:
        model: A `keras.Model` with a defined input shape.
        shape: Its input shape, batch axis first.
        quantize: One of `QUANTIZE_MODES`.
        calibration: float32 array of real inputs, for `"int8"`.
        int8_io: Whether the input and output are int8 (with `"int8"`).

    Returns:
        The flatbuffer as `bytes`.
    """
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as folder, quiet_native_output():
        _export_saved_model(model, shape, folder)
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        return _convert(converter, quantize, calibration, int8_io)


def _convert(converter, quantize, calibration, int8_io):
    import tensorflow as tf

    if quantize is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":

        def representative():
            for example in calibration:
                yield [example[None].astype("float32")]

        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8
        ]
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    return converter.convert()


class Runner:
    """Runs a `.tflite` file in the LiteRT interpreter, one example at a time.

    Inputs are quantized and outputs dequantized when the model's input or
    output is int8, so `predict` takes and returns float32 like Keras.

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
        from ai_edge_litert.interpreter import Interpreter

        self.path = os.fspath(path)
        with quiet_native_output():
            self.interpreter = Interpreter(
                model_path=self.path, num_threads=num_threads
            )
            self.interpreter.allocate_tensors()
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]

    @staticmethod
    def _quantization(detail):
        if detail["dtype"] in (np.int8, np.uint8):
            scale, zero_point = detail["quantization"]
            return float(scale), int(zero_point)
        return None

    @property
    def input_quantization(self):
        """`(scale, zero_point)` of an integer input, or None."""
        return self._quantization(self._input)

    @property
    def output_quantization(self):
        """`(scale, zero_point)` of an integer output, or None."""
        return self._quantization(self._output)

    def _invoke(self, example):
        q = self.input_quantization
        if q is not None:
            scale, zero_point = q
            info = np.iinfo(self._input["dtype"])
            example = np.clip(
                np.round(example / scale + zero_point), info.min, info.max
            ).astype(self._input["dtype"])
        self.interpreter.set_tensor(self._input["index"], example)
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self._output["index"])
        q = self.output_quantization
        if q is not None:
            scale, zero_point = q
            out = (out.astype("float32") - zero_point) * scale
        return out

    def predict(self, x):
        """Outputs for a batch of float32 inputs, computed one by one.

        Args:
            x: float32 array, batch axis first.

        Returns:
            A float32 array of outputs.
        """
        x = np.asarray(x, "float32")
        return np.concatenate(
            [self._invoke(x[i : i + 1]) for i in range(len(x))]
        )

    def latency_ms(self, example, runs=200, warmup=20):
        """Median milliseconds of one single-example inference.

        Args:
            example: One input with a batch axis of 1.
            runs: Timed runs.
            warmup: Untimed runs first.

        Returns:
            The median, in milliseconds.
        """
        example = np.asarray(example, "float32")
        for _ in range(warmup):
            self._invoke(example)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            self._invoke(example)
            times.append(time.perf_counter() - start)
        return 1000.0 * statistics.median(times)


def _compare(report, expected, exported, labels):
    expected = np.asarray(expected, "float32")
    exported = np.asarray(exported, "float32").reshape(expected.shape)
    report.compared = int(len(expected))
    report.max_abs_diff = float(np.abs(expected - exported).max())
    report.argmax_agreement = float(
        np.mean(expected.argmax(-1) == exported.argmax(-1))
    )
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        report.accuracy = float(np.mean(exported.argmax(-1) == labels))
        report.keras_accuracy = float(np.mean(expected.argmax(-1) == labels))


def _size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total
