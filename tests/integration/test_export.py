import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_distill import Distiller
from keras_distill import export
from keras_distill.app import datasets as data
from keras_distill.app import zoo


@pytest.fixture(scope="module")
def mnist():
    return data.load_arrays("mnist5k")


@pytest.fixture(scope="module")
def trained(mnist):
    keras.utils.set_random_seed(0)
    model = zoo.build("mlp-tiny", mnist.input_shape, 10, seed=0)
    model.compile(
        "adam",
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(mnist.x_train, mnist.y_train, epochs=3, verbose=0)
    return model


@pytest.fixture(scope="module")
def reports(trained, mnist, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tflite")
    out = {}
    for mode in export.QUANTIZE_MODES:
        out[mode] = export.tflite(
            trained,
            folder / f"student_{mode}.tflite",
            quantize=mode,
            representative_data=mnist.x_train,
            check_data=(mnist.x_test, mnist.y_test),
            latency_runs=20,
            measure_float32=True,
        )
    return out


def test_float32_matches_keras_on_real_inputs(trained, mnist, reports):
    report = reports[None]
    assert report.compared == 1000
    assert report.max_abs_diff <= 1e-4
    # Checked independently of the report, on 100 real inputs.
    runner = export.Runner(report.path)
    x = mnist.x_test[:100]
    np.testing.assert_allclose(
        runner.predict(x), trained.predict(x, verbose=0), atol=1e-4
    )


def test_float16_matches_keras(reports):
    assert reports["float16"].max_abs_diff <= 1e-2


@pytest.mark.parametrize("mode", ["dynamic", "int8"])
def test_quantized_argmax_agreement(reports, mode):
    report = reports[mode]
    assert report.argmax_agreement >= 0.97
    assert report.keras_accuracy > 0.85  # a trained student
    assert abs(report.accuracy - report.keras_accuracy) < 0.02


def test_sizes(reports):
    float32 = reports[None].bytes
    assert reports[None].float32_bytes == float32
    assert reports["int8"].bytes <= 0.30 * float32
    assert reports["float16"].bytes <= 0.55 * float32
    assert reports["int8"].size_ratio == reports["int8"].bytes / float32
    for report in reports.values():
        assert report.bytes == os.path.getsize(report.path)
        assert report.latency_ms > 0


def test_int8_io_records_quantization(trained, mnist, tmp_path):
    report = export.tflite(
        trained,
        tmp_path / "io.tflite",
        quantize="int8",
        int8_io=True,
        representative_data=mnist.x_train,
        check_data=(mnist.x_test, mnist.y_test),
        latency_runs=5,
    )
    scale, zero_point = report.input_quantization
    assert 0 < scale < 0.01 and -128 <= zero_point <= 127
    assert report.output_quantization is not None
    assert report.argmax_agreement >= 0.97
    details = export.Runner(report.path).interpreter.get_input_details()[0]
    assert details["dtype"] == np.int8


def test_report_json(reports):
    loaded = json.loads(reports["int8"].to_json())
    assert loaded["quantize"] == "int8"
    assert set(loaded) >= {
        "path",
        "bytes",
        "float32_bytes",
        "max_abs_diff",
        "argmax_agreement",
        "accuracy",
        "latency_ms",
    }


def test_representative_data_forms(trained, mnist, tmp_path):
    ds = tf.data.Dataset.from_tensor_slices(
        (mnist.x_train[:64], mnist.y_train[:64])
    ).batch(16)
    report = export.tflite(
        trained,
        tmp_path / "ds.tflite",
        quantize="int8",
        representative_data=ds,
        latency_runs=5,
    )
    assert report.compared == 64  # checked on the same real inputs
    assert report.accuracy is not None


def test_saved_model_serving_signature(trained, mnist, tmp_path):
    path = str(tmp_path / "student_savedmodel")
    report = export.saved_model(trained, path, check_data=mnist.x_test[:50])
    assert report.max_abs_diff <= 1e-5
    loaded = tf.saved_model.load(path)
    signature = loaded.signatures["serving_default"]
    (name,) = signature.structured_input_signature[1]
    for batch in (1, 7):
        x = mnist.x_test[:batch]
        (out,) = signature(**{name: tf.constant(x)}).values()
        np.testing.assert_allclose(
            out.numpy(), trained.predict(x, verbose=0), atol=1e-5
        )


def _variables(path):
    loaded = tf.saved_model.load(path)
    return sorted((v.name, tuple(v.shape)) for v in loaded.variables)


def test_exporting_a_distiller_writes_the_student(trained, mnist, tmp_path):
    teacher = zoo.build("mlp-small", mnist.input_shape, 10, seed=1)
    student = keras.models.clone_model(trained)
    student.set_weights(trained.get_weights())
    distiller = Distiller(teacher, student)
    a = export.saved_model(distiller, tmp_path / "d_sm")
    b = export.saved_model(student, tmp_path / "s_sm")
    saved = _variables(a.path)
    assert saved == _variables(b.path)
    assert sorted(shape for _, shape in saved) == sorted(
        tuple(w.shape) for w in student.weights
    )
    assert (784, 800) not in {shape for _, shape in saved}  # the teacher's
    assert abs(a.bytes - b.bytes) < 0.05 * b.bytes
    assert a.bytes < teacher.count_params()  # 1.3 M float32 weights absent
    c = export.tflite(distiller, tmp_path / "d.tflite", latency_runs=5)
    d = export.tflite(student, tmp_path / "s.tflite", latency_runs=5)
    assert c.bytes == d.bytes


# -- errors and atomic writes ----------------------------------------------


def test_error_int8_without_representative_data(trained, tmp_path):
    with pytest.raises(ValueError, match="needs `representative_data`"):
        export.tflite(trained, tmp_path / "m.tflite", quantize="int8")
    assert os.listdir(tmp_path) == []


def test_error_unknown_quantize_mode(trained, tmp_path):
    with pytest.raises(ValueError, match=r"Expected one of \[None, 'float16'"):
        export.tflite(trained, tmp_path / "m.tflite", quantize="int4")


def test_error_int8_io_without_int8(trained, tmp_path):
    with pytest.raises(ValueError, match="`int8_io=True` needs"):
        export.tflite(trained, tmp_path / "m.tflite", int8_io=True)


def test_error_unwritable_folder(trained, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError, match="Cannot write .*cannot be created"):
        export.tflite(trained, blocker / "m.tflite", latency_runs=1)
    with pytest.raises(OSError, match="Cannot write"):
        export.saved_model(trained, blocker / "sm")


def test_error_model_without_input_shape(tmp_path):
    class Lazy(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, x):
            return self.dense(x)

    with pytest.raises(ValueError, match="defined input shape"):
        export.tflite(Lazy(), tmp_path / "m.tflite")
    with pytest.raises(ValueError, match="Expected a `keras.Model`"):
        export.saved_model("model.keras", tmp_path / "sm")


def test_nothing_half_written_on_failure(trained, tmp_path, monkeypatch):
    target = tmp_path / "m.tflite"
    target.write_bytes(b"previous")

    import builtins

    real_open = builtins.open

    class FailingFile:
        def __init__(self, *args, **kwargs):
            self._file = real_open(*args, **kwargs)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._file.close()

        def write(self, content):
            self._file.write(content[: len(content) // 2])
            raise OSError(28, "No space left on device")

    monkeypatch.setattr("keras_distill._utils.open", FailingFile, raising=False)
    with pytest.raises(OSError, match="No space left"):
        export.tflite(trained, target, latency_runs=1)
    assert target.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["m.tflite"]


def test_saved_model_failure_leaves_nothing(trained, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("export failed")

    monkeypatch.setattr(type(trained), "export", fail)
    with pytest.raises(RuntimeError, match="export failed"):
        export.saved_model(trained, tmp_path / "sm")
    assert os.listdir(tmp_path) == []
