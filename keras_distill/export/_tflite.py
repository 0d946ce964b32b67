"""TFLite/LiteRT export: `tflite` (a checked `.tflite` file) and `convert`
(the flatbuffer) in every quantization mode of `QUANTIZE_MODES`.
"""

import contextlib
import os
import tempfile
import warnings

import tensorflow as tf

from keras_distill._utils import atomic_path
from keras_distill._utils import quiet_native_output
from keras_distill._utils import write_bytes
from keras_distill._validation import check_choice
from keras_distill.export._parity import compare
from keras_distill.export._parity import keras_outputs
from keras_distill.export._prepared import prepare
from keras_distill.export._report import ExportReport
from keras_distill.export._runner import Runner
from keras_distill.export._saved_model import write_saved_model
from keras_distill.export._specs import InputSpecs
from keras_distill.export._specs import examples
from keras_distill.quantization._twin import check_ranges_seen
from keras_distill.quantization._twin import constant_form
from keras_distill.quantization._twin import output_steps
from keras_distill.quantization._twin import scheme_of

QUANTIZE_MODES = (None, "float16", "dynamic", "int8")
REPRESENTATIVE_SAMPLES = 200


def tflite(
    model,
    path,
    quantize=None,
    representative_data=None,
    int8_io=False,
    check_data=None,
    latency_runs=200,
    measure_float32=False,
    sequence_length=None,
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

    Text models are exported in the form an app runs them, from token ids:

    - A model whose string input goes straight into a
      `TextVectorization(output_mode="int", output_sequence_length=N)`
      becomes the model after it, with an int32 `token_ids` input of
      shape `(batch, N)`; the vectorizer's vocabulary (one token a line,
      the line number is the id) is written beside the file as
      `<path without .tflite>.vocabulary.txt` (`report.vocabulary_path`).
      Data given as strings is tokenized by the vectorizer itself. Any
      other model that takes strings is refused before converting.
    - A KerasHub task (`CausalLM`, a classifier) is exported with its
      `token_ids` and `padding_mask` inputs at `sequence_length` (by
      default its preprocessor's); data given as strings goes through
      its preprocessor, and the check compares valid positions only.

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
        sequence_length: The length of token inputs whose length is not
            fixed (a KerasHub task: its preprocessor's by default).

    Returns:
        An `ExportReport`.

    Raises:
        ValueError: For an unknown `quantize` mode, `"int8"` without
            representative data, `int8_io` without `"int8"`, a model with
            no defined input shape, or one that takes strings other than
            through a `TextVectorization` with a fixed output length.
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
    check_choice("quantize", quantize, QUANTIZE_MODES)
    twin = scheme_of(getattr(model, "student", model)) is not None
    if quantize == "int8" and representative_data is None and not twin:
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
    prepared = prepare(model, sequence_length)
    model, specs, feed = prepared.model, prepared.specs, prepared.feed
    path = os.fspath(path)
    calibration = None
    if check_twin(model, quantize):
        representative_data = None  # the twin's learned ranges are used
    if representative_data is not None:
        calibration, _ = examples(
            representative_data, specs, REPRESENTATIVE_SAMPLES, feed
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
            named, labels = examples(check, specs, 1000, feed)
            expected = keras_outputs(model, specs, named)
            exported = runner.predict_outputs(named)
            valid = named.get(prepared.mask) if prepared.mask else None
            steps = output_steps(model) if quantize == "int8" else None
            if steps is not None and None in steps:
                steps = None
            if scheme_of(model) != "int8":
                steps = None
            compare(report, expected, exported, labels, valid, steps)
            first = {k: v[:1] for k, v in named.items()}
        else:
            first = specs.zeros()
        report.latency_ms = runner.latency_ms(first, runs=latency_runs)
        if prepared.vocabulary is not None:
            report.vocabulary_path = write_vocabulary(path, prepared.vocabulary)
    runner.path = path
    return report


def vocabulary_path(path):
    """Where the vocabulary of a model exported from token ids is written:
    `student.tflite` -> `student.vocabulary.txt`."""
    stem = path[: -len(".tflite")] if path.endswith(".tflite") else path
    return f"{stem}.vocabulary.txt"


def write_vocabulary(path, vocabulary):
    """Writes the tokens one a line (line n holds token id n); returns the
    file's path."""
    target = vocabulary_path(path)
    with atomic_path(target) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for token in vocabulary:
                f.write(f"{token}\n")
    return target


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
    if not isinstance(specs, InputSpecs):
        specs = InputSpecs.of(model)
    if calibration is not None and not isinstance(calibration, dict):
        calibration = specs.by_name(calibration)
    twin = scheme_of(model) is not None
    with tempfile.TemporaryDirectory() as folder, quiet_native_output():
        with constant_form(model) if twin else contextlib.nullcontext():
            write_saved_model(model, specs, folder)
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        if twin and quantize == "int8":  # ranges from the fake quantization
            calibration = None
        return _convert(converter, quantize, calibration, int8_io)


def check_twin(model, quantize):
    """Whether `model` is a quantization-aware twin; raises if its scheme
    does not match the export mode or its ranges never trained."""
    scheme = scheme_of(model)
    if scheme is None:
        return False
    if quantize != scheme:
        raise ValueError(
            "Invalid value for argument `quantize`. A quantization-aware "
            f"model of scheme {scheme!r} exports with quantize={scheme!r}, "
            "the arithmetic it trained with. Received: "
            f"quantize={quantize!r}"
        )
    if scheme == "int8":
        check_ranges_seen(model)
    return True


def _convert(converter, quantize, calibration, int8_io):
    if quantize is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8" and calibration is None:
        # A quantization-aware twin: the ranges are in the graph (the
        # converter asks for calibration data if the ops are restricted
        # to int8, since it does not look for them in a SavedModel).
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
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
