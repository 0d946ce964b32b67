"""Quantization-aware students: distilled, pruned, exported to int8
without representative data, checked against the Keras twin, and
reloaded in a fresh process."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_distill
from keras_distill import quantization

pytestmark = pytest.mark.integration

rng = np.random.default_rng(1)
CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _mlp(name, width):
    return keras.Sequential(
        [
            keras.Input((20,)),
            keras.layers.Dense(width, activation="relu", name="hidden"),
            keras.layers.Dense(16, activation="tanh", name="squash"),
            keras.layers.Dense(5, name="logits"),
        ],
        name=name,
    )


def _cnn():
    """Convolution + BatchNormalization + ReLU (folded), a depthwise
    convolution, a residual Add, pooling and a dense head."""
    inputs = keras.Input((12, 12, 3))
    h = keras.layers.Conv2D(8, 3, use_bias=False, name="stem")(inputs)
    h = keras.layers.BatchNormalization(name="stem_bn")(h)
    h = keras.layers.ReLU(name="stem_relu")(h)
    a = keras.layers.DepthwiseConv2D(
        3, padding="same", depth_multiplier=2, activation="relu"
    )(h)
    b = keras.layers.Conv2D(16, 1, name="project")(h)
    h = keras.layers.Add()([a, b])
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(5)(h), name="cnn")


def _trained(model, x, y, epochs=2):
    model.compile("adam", CE)
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    # Moving statistics away from their initial values, so that the
    # fold is not the identity.
    return model


def _fit_and_export(twin, x, y, path, batch_size=32, loss=CE):
    """One epoch of the twin (its ranges see data), then its int8 file's
    report, checked against the twin."""
    twin.compile("adam", loss)
    twin.fit(x, y, epochs=1, batch_size=batch_size, verbose=0)
    return keras_distill.export.tflite(
        twin, path, quantize="int8", check_data=x
    )


def test_distilled_pruned_mlp_exports_what_it_trained(tmp_path):
    x = rng.normal(size=(256, 20)).astype("float32")
    y = rng.integers(0, 5, 256)
    teacher = _trained(_mlp("teacher", 64), x, y)
    student = _mlp("student", 32)
    twin = quantization.quantization_aware(student)
    pruner = keras_distill.prune.Pruner(
        0.5, begin_step=0, end_step=8, frequency=4, target=student
    )
    distiller = keras_distill.Distiller(teacher, twin)
    distiller.compile("adam", CE)
    distiller.fit(
        x, y, epochs=3, batch_size=32, verbose=0, callbacks=[pruner]
    )
    assert quantization.freeze_ranges(twin) == 4  # input + 3 outputs
    # The zeros stay zeros in the rounded kernels the file will hold.
    kernel = student.get_layer("hidden").kernel.numpy()
    assert np.mean(kernel == 0.0) >= 0.49
    wrapper = twin.layers[-1].get_layer("hidden_quantized")
    rounded = keras.ops.convert_to_numpy(wrapper.quantized_kernel())
    assert np.all(rounded[kernel == 0.0] == 0.0)
    report = keras_distill.export.tflite(
        distiller, tmp_path / "mlp.tflite", quantize="int8", check_data=(x, y)
    )
    assert report.within_one_step >= 0.999
    assert report.argmax_agreement >= 0.999
    # Full integer: every weight in the file is int8.
    from ai_edge_litert.interpreter import Interpreter

    weights = [
        t
        for t in Interpreter(model_path=report.path).get_tensor_details()
        if len(t["shape"]) == 2 and t["shape"][0] > 1
    ]
    assert weights and all(t["dtype"] == np.int8 for t in weights)


def test_cnn_with_folds_depthwise_and_add_matches_its_file(tmp_path):
    x = rng.uniform(size=(128, 12, 12, 3)).astype("float32")
    y = rng.integers(0, 5, 128)
    model = _trained(_cnn(), x, y)
    twin = quantization.quantization_aware(model)
    names = {layer.name for layer in twin.layers[-1].layers}
    assert "stem_bn_folded" in names and "stem_relu_folded" in names
    report = _fit_and_export(twin, x, y, tmp_path / "cnn.tflite")
    assert report.within_one_step >= 0.999
    assert report.argmax_agreement >= 0.99
    # int8 inputs and outputs too, with the twin's input range.
    report = keras_distill.export.tflite(
        twin, tmp_path / "cnn_io.tflite", quantize="int8", int8_io=True,
        check_data=x,
    )
    assert report.input_quantization is not None
    assert report.argmax_agreement >= 0.99


def test_export_modes_must_match_the_scheme(tmp_path):
    x = rng.normal(size=(64, 20)).astype("float32")
    twin = quantization.quantization_aware(_mlp("s", 8))
    with pytest.raises(ValueError, match="never trained"):
        keras_distill.export.tflite(twin, tmp_path / "a.tflite", "int8")
    twin(x, training=True)
    for mode in (None, "float16", "dynamic"):
        with pytest.raises(ValueError, match="exports with quantize='int8'"):
            keras_distill.export.tflite(twin, tmp_path / "b.tflite", mode)
    weights_only = quantization.quantization_aware(_mlp("w", 8), "dynamic")
    with pytest.raises(ValueError, match="quantize='dynamic'"):
        keras_distill.export.tflite(
            weights_only, tmp_path / "c.tflite", "int8", representative_data=x
        )
    assert not os.path.exists(tmp_path / "b.tflite")


def test_weights_only_twin_holds_the_files_weights(tmp_path):
    x = rng.normal(size=(64, 20)).astype("float32")
    model = keras.Sequential(
        [keras.Input((20,)), keras.layers.Dense(64), keras.layers.Dense(5)]
    )
    twin = quantization.quantization_aware(model, scheme="dynamic")
    report = keras_distill.export.tflite(
        twin, tmp_path / "w.tflite", quantize="dynamic", check_data=x
    )
    # The twin rounds each input row as the runtime does: the same numbers.
    assert report.argmax_agreement == 1.0
    assert report.max_abs_diff < 1e-4
    float_report = keras_distill.export.tflite(
        model, tmp_path / "f.tflite", quantize="dynamic", check_data=x
    )
    assert float_report.max_abs_diff > 100 * report.max_abs_diff


def test_weights_only_convolutions_round_each_image(tmp_path):
    """Dynamic-range convolutions round each input image on its own grid
    (the twin's `quantize_rows` over an image's axes)."""
    inputs = keras.Input((10, 10, 8))
    h = keras.layers.DepthwiseConv2D(3, depth_multiplier=16)(inputs)
    h = keras.layers.Reshape((64, 128))(h)
    model = keras.Model(inputs, keras.layers.Conv1D(40, 3)(h))
    x = rng.normal(size=(8, 10, 10, 8)).astype("float32")
    twin = quantization.quantization_aware(model, scheme="dynamic")
    report = keras_distill.export.tflite(
        twin, tmp_path / "conv.tflite", quantize="dynamic", check_data=x
    )
    assert report.max_abs_diff < 1e-4


def test_decoder_twin_computes_as_its_dynamic_range_file(tmp_path):
    """The `bench lm` decoder (embeddings, layer normalization, causal
    multi-head attention, a GELU MLP), distilled into its weights-only
    twin from a float teacher, against its dynamic-range file."""
    from keras_distill.app.bench.lm import decoder_lm

    x = rng.integers(0, 300, size=(48, 16)).astype("int32")
    y = np.roll(x, -1, axis=1)
    teacher = decoder_lm(300, 16, 32, 1, 2, seed=1, name="teacher")
    teacher = _trained(teacher, x, y, 1)
    student = decoder_lm(300, 16, 32, 1, 2, seed=2, name="student")
    twin = quantization.quantization_aware(student, scheme="dynamic")
    kinds = {type(layer).__name__ for layer in twin.layers}
    assert {"QuantizedAttention", "QuantizedEmbedding"} <= kinds
    query = student.get_layer("student_att0").query_dense.kernel
    before = query.numpy().copy()
    distiller = keras_distill.Distiller(
        teacher, twin, keras_distill.losses.LogitsDistillation(1.0)
    )
    distiller.compile(keras.optimizers.Adam(1e-2), CE)
    distiller.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert not np.allclose(before, query.numpy())  # attention trains
    report = keras_distill.export.tflite(
        twin, tmp_path / "decoder.tflite", quantize="dynamic", check_data=x
    )
    assert report.argmax_agreement >= 0.999
    # Most logits equal; the rest differ where a float difference of the
    # attention or the normalization moved an input across a rounding.
    from keras_distill.export._runner import Runner

    file = Runner(str(tmp_path / "decoder.tflite")).predict(x)
    keras_logits = keras.ops.convert_to_numpy(twin(x))
    assert np.mean(np.abs(file - keras_logits) < 1e-4) >= 0.95
    plain = keras.ops.convert_to_numpy(student(x))
    assert np.mean(np.abs(plain - keras_logits) < 1e-4) < 0.5
    twin.save(tmp_path / "twin.keras")
    again = keras.models.load_model(tmp_path / "twin.keras")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(again(x)), keras_logits, atol=1e-6
    )


def test_float_layers_between_int8_tensors_match_their_file(tmp_path):
    """A `LayerNormalization` (no int8 simulation: float between int8
    tensors), a GELU (LiteRT's int8 kernel) and `x + y` (a Keras op)."""
    x = rng.normal(size=(64, 10, 8)).astype("float32")
    y = rng.integers(0, 5, (64, 10))
    inputs = keras.Input((10, 8))
    h = keras.layers.Dense(32, name="widen")(inputs)
    h = keras.layers.LayerNormalization(name="norm")(h)
    g = keras.layers.Dense(32, activation="gelu", name="mlp")(h)
    outputs = keras.layers.Dense(5, name="logits")(g + h)
    model = _trained(keras.Model(inputs, outputs), x, y, 1)
    with pytest.warns(UserWarning, match="'norm'"):
        twin = quantization.quantization_aware(model)
    report = _fit_and_export(twin, x, y, tmp_path / "mixed.tflite", 16)
    assert report.within_one_step >= 0.999
    assert report.argmax_agreement >= 0.999
    # The `x + y` op's range saves and reloads with the twin.
    twin.save(tmp_path / "mixed.keras")
    again = keras.models.load_model(tmp_path / "mixed.keras")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(again(x)),
        keras.ops.convert_to_numpy(twin(x)),
        atol=1e-6,
    )
    from keras_distill.app.bench.lm import decoder_lm

    decoder = decoder_lm(50, 8, 16, 1, 2, seed=0, name="decoder")
    with pytest.raises(ValueError, match="'decoder_att0' of type MultiHead"):
        quantization.quantization_aware(decoder)


RELOAD = textwrap.dedent(
    """
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np
    import keras
    import keras_distill

    folder = sys.argv[1]
    twin = keras.models.load_model(os.path.join(folder, "twin.keras"))
    x = np.load(os.path.join(folder, "x.npy"))
    np.save(os.path.join(folder, "again.npy"),
            keras.ops.convert_to_numpy(twin(x)))
    report = keras_distill.export.tflite(
        twin, os.path.join(folder, "twin.tflite"), quantize="int8",
        check_data=x)
    assert report.within_one_step >= 0.999, report
    """
)


def test_twin_reloads_in_a_fresh_process_with_its_ranges(tmp_path):
    x = rng.uniform(size=(64, 12, 12, 3)).astype("float32")
    y = rng.integers(0, 5, 64)
    twin = quantization.quantization_aware(_trained(_cnn(), x, y, 1))
    twin.compile("adam", CE)
    twin.fit(x, y, epochs=1, batch_size=32, verbose=0)
    twin.save(tmp_path / "twin.keras")
    np.save(tmp_path / "x.npy", x)
    result = subprocess.run(
        [sys.executable, "-c", RELOAD, str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_allclose(
        np.load(tmp_path / "again.npy"),
        keras.ops.convert_to_numpy(twin(x)),
        atol=1e-6,
    )


def test_embedding_and_einsum_dense_match_their_file(tmp_path):
    # Its own generator: the data do not depend on the tests run before.
    own = np.random.default_rng(3)
    x = own.integers(0, 50, size=(128, 12)).astype("int32")
    y = own.integers(0, 5, 128)
    inputs = keras.Input((12,), dtype="int32")
    h = keras.layers.Embedding(50, 16, name="tokens")(inputs)
    h = keras.layers.EinsumDense(
        "abc,cd->abd", (None, 24), bias_axes="d", activation="relu"
    )(h)
    h = keras.layers.GlobalAveragePooling1D()(h)
    model = _trained(keras.Model(inputs, keras.layers.Dense(5)(h)), x, y)
    twin = quantization.quantization_aware(model)
    twin.compile("adam", CE)
    bias = model.layers[2].bias.numpy().copy()
    twin.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert not np.allclose(bias, model.layers[2].bias.numpy())  # it trains
    # The table on one int8 grid: at most 256 distinct values.
    wrapper = twin.layers[-1].get_layer("tokens_quantized")
    table = keras.ops.convert_to_numpy(wrapper.table())
    assert len(np.unique(table)) <= 256
    report = keras_distill.export.tflite(
        twin, tmp_path / "tokens.tflite", quantize="int8", check_data=x
    )
    assert report.within_one_step >= 0.999
    assert report.argmax_agreement >= 0.999
    masked = keras.Sequential(
        [
            keras.Input((4,), dtype="int32"),
            keras.layers.Embedding(9, 2, mask_zero=True),
        ]
    )
    with pytest.raises(ValueError, match="mask_zero"):
        quantization.quantization_aware(masked)


@pytest.mark.slow
def test_keras_applications_mobilenet_twin_matches_its_file(tmp_path):
    """MobileNetV2 (depthwise convolutions, batch normalization, ReLU6,
    residual adds, a softmax head) in full integer."""
    model = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10
    )
    x = rng.uniform(size=(32, 32, 32, 3)).astype("float32")
    twin = quantization.quantization_aware(model, float_layers="raise")
    report = _fit_and_export(
        twin, x, rng.integers(0, 10, 32), tmp_path / "mobilenet.tflite",
        loss="sparse_categorical_crossentropy",
    )
    assert report.within_one_step >= 0.999
    assert report.argmax_agreement >= 0.999
