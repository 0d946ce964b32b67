"""Quantization-aware twins against NumPy references of LiteRT's int8
arithmetic, their export, and their errors."""

import keras
import numpy as np
import pytest

import keras_distill
from keras_distill import quantization

rng = np.random.default_rng(0)


# NumPy references, written from the TFLite quantization spec.


def np_weight_grid(kernel, channel_axis=-1):
    """Symmetric per-channel int8, narrow range: q in [-127, 127],
    scale = max|w| / 127 per channel, zero point 0."""
    moved = np.moveaxis(kernel, channel_axis, -1)
    bound = np.abs(moved).reshape(-1, moved.shape[-1]).max(axis=0)
    scale = bound / 127.0
    q = np.clip(np.floor(moved / scale + 0.5), -127, 127)
    return np.moveaxis(q * scale, -1, channel_axis), scale


def np_activation_params(low, high):
    """Per-tensor asymmetric int8 from a range holding 0: the scale and
    the zero point (nudged so that 0 is exact)."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = (high - low) / 255.0
    zero_point = int(np.clip(np.round(-128 - low / scale), -128, 127))
    return scale, zero_point


def np_activation_grid(x, low, high):
    scale, zero_point = np_activation_params(low, high)
    q = np.clip(np.floor(x / scale + 0.5) + zero_point, -128, 127)
    return (q - zero_point) * scale


def test_weights_round_per_channel_symmetric_narrow_range():
    kernel = rng.normal(size=(6, 4)).astype("float32")
    kernel[:, 2] *= 10.0  # channels of very different ranges
    got = keras.ops.convert_to_numpy(
        quantization._fake.quantize_weights(kernel)
    )
    want, scale = np_weight_grid(kernel)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    q = got / scale
    np.testing.assert_allclose(q, np.round(q), atol=1e-4)
    assert np.abs(np.round(q)).max() == 127  # narrow range: never -128


def test_a_pruned_channel_stays_zero():
    kernel = rng.normal(size=(5, 3)).astype("float32")
    kernel[:, 1] = 0.0
    kernel[0, 0] = 0.0
    got = keras.ops.convert_to_numpy(
        quantization._fake.quantize_weights(kernel)
    )
    assert np.all(got[:, 1] == 0.0) and got[0, 0] == 0.0
    assert np.isfinite(got).all()


def test_activation_ranges_track_a_moving_average_then_freeze():
    quantizer = quantization.ActivationQuantizer(decay=0.5)
    a = np.array([-1.0, 0.5, 2.0], "float32")
    b = np.array([-3.0, 0.0, 1.0], "float32")
    out = quantizer(a, training=True)  # the first batch sets the range
    assert float(quantizer.range_min) == -1.0
    assert float(quantizer.range_max) == 2.0
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(out), np_activation_grid(a, -1.0, 2.0),
        atol=1e-6,
    )
    quantizer(b, training=True)
    assert float(quantizer.range_min) == pytest.approx(-2.0)  # 0.5·-1 + 0.5·-3
    assert float(quantizer.range_max) == pytest.approx(1.5)
    quantizer(b * 10, training=False)  # inference never moves it
    assert float(quantizer.range_min) == pytest.approx(-2.0)
    quantization.freeze_ranges(quantizer_model(quantizer))
    quantizer(b * 10, training=True)
    assert float(quantizer.range_max) == pytest.approx(1.5)


def quantizer_model(layer):
    inputs = keras.Input((3,))
    return keras.Model(inputs, layer(inputs))


def test_activation_rounding_matches_the_int8_grid():
    x = rng.normal(size=(1000,)).astype("float32") * 3.0
    for low, high in ((-2.5, 4.0), (0.0, 6.0), (-1.0, 0.0), (0.3, 2.0)):
        quantizer = quantization.ActivationQuantizer()
        quantizer.build(x.shape)
        quantizer.range_min.assign(low)
        quantizer.range_max.assign(high)
        got = keras.ops.convert_to_numpy(quantizer(x))
        np.testing.assert_allclose(
            got, np_activation_grid(x, low, high), atol=1e-5
        )


def _mlp():
    model = keras.Sequential(
        [
            keras.Input((12,)),
            keras.layers.Dense(16, activation="relu", name="hidden"),
            keras.layers.Dense(8, activation="tanh", name="squash"),
            keras.layers.Dense(4, name="logits"),
        ]
    )
    return model


def test_twin_forward_pass_equals_numpy_int8_simulation():
    model = _mlp()
    x = rng.normal(size=(64, 12)).astype("float32")
    twin = quantization.quantization_aware(model)
    twin(x, training=True)  # ranges from one batch
    ranges = {
        q.name: (float(q.range_min), float(q.range_max))
        for q in quantization._twin.quantizers(twin)
    }
    got = keras.ops.convert_to_numpy(twin(x))

    def grid(name, v):
        return np_activation_grid(v, *ranges[name])

    h = grid(next(k for k in ranges if "input" in k), x)
    for layer in model.layers:
        kernel, _ = np_weight_grid(layer.kernel.numpy())
        z = h @ kernel + layer.bias.numpy()
        prefix = f"{layer.name}_quantized"
        if layer.name == "hidden":
            h = grid(f"{prefix}_output", np.maximum(z, 0.0))
        elif layer.name == "squash":
            z = grid(f"{prefix}_output", z)
            # LiteRT's int8 tanh writes on a fixed grid: scale 1/128, zp 0.
            h = np_activation_grid(np.tanh(z), -1.0, 127.0 / 128.0)
        else:
            h = grid(f"{prefix}_output", z)
    np.testing.assert_allclose(got, h, atol=1e-4)


def test_twin_shares_weights_and_trains_in_a_distiller():
    teacher = _mlp()
    student = _mlp()
    twin = quantization.quantization_aware(student)
    assert {id(w) for w in student.trainable_weights} <= {
        id(w) for w in twin.trainable_weights
    }
    x = rng.normal(size=(64, 12)).astype("float32")
    y = rng.integers(0, 4, 64)
    before = student.layers[0].kernel.numpy().copy()
    distiller = keras_distill.Distiller(teacher, twin)
    distiller.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    history = distiller.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert np.isfinite(history.history["distillation_loss"]).all()
    assert not np.allclose(before, student.layers[0].kernel.numpy())
    seen = [float(q.batches) for q in quantization._twin.quantizers(twin)]
    assert seen and all(s == 8 for s in seen)  # 2 epochs of 4 batches
    # From a teacher cache.
    cache = keras_distill.teachers.TeacherCache(teacher, x, verbose=0)
    cached = keras_distill.Distiller(teacher, twin)
    cached.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    history = cached.fit(cache.dataset(x, y, batch_size=16), verbose=0)
    assert np.isfinite(history.history["distillation_loss"]).all()
    assert all(
        float(q.batches) == 12 for q in quantization._twin.quantizers(twin)
    )


def test_unsupported_layers_are_named():
    inputs = keras.Input((6, 4))
    h = keras.layers.LayerNormalization(name="norm")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    with pytest.raises(ValueError, match="'norm' of type LayerNormalization"):
        quantization.quantization_aware(model)
    # Weights only: the normalization stays float.
    twin = quantization.quantization_aware(model, scheme="dynamic")
    assert quantization.is_quantization_aware(twin)


def test_subclassed_models_are_refused():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.zeros((1, 3), "float32"))
    with pytest.raises(ValueError, match="functional or Sequential"):
        quantization.quantization_aware(net)


def test_scheme_and_decay_are_checked():
    with pytest.raises(ValueError, match="scheme"):
        quantization.quantization_aware(_mlp(), scheme="int4")
    with pytest.raises(ValueError, match="decay"):
        quantization.ActivationQuantizer(decay=1.0)


def test_freeze_ranges_callback_stops_tracking_at_its_epoch():
    twin = quantization.quantization_aware(_mlp())
    twin.compile("adam", "mse")
    x = rng.normal(size=(32, 12)).astype("float32")
    y = rng.normal(size=(32, 4)).astype("float32")
    freeze = quantization.FreezeRanges(twin, epoch=2)
    twin.fit(x, y, batch_size=16, epochs=4, verbose=0, callbacks=[freeze])
    # Two batches an epoch, tracked in epochs 0 and 1 only.
    seen = {float(q.batches) for q in quantization._twin.quantizers(twin)}
    assert seen == {4.0}
    with pytest.raises(ValueError, match="epoch"):
        quantization.FreezeRanges(twin, epoch=-1)


def test_a_range_frozen_before_training_takes_the_first_batch():
    quantizer = quantization.ActivationQuantizer()
    model = quantizer_model(quantizer)
    quantization.freeze_ranges(model)
    quantizer(np.array([-1.0, 0.0, 3.0], "float32"), training=True)
    quantizer(np.array([-9.0, 0.0, 9.0], "float32"), training=True)
    assert float(quantizer.range_min) == -1.0
    assert float(quantizer.range_max) == 3.0
