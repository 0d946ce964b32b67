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


def test_layers_without_int8_simulation_are_named():
    inputs = keras.Input((6, 4))
    h = keras.layers.LayerNormalization(name="norm")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    with pytest.raises(ValueError, match="'norm' of type LayerNormalization"):
        quantization.quantization_aware(model, float_layers="raise")
    # By default it runs in float between int8 tensors, and says so.
    with pytest.warns(UserWarning, match="'norm' \\(LayerNormalization\\)"):
        twin = quantization.quantization_aware(model)
    x = rng.normal(size=(3, 6, 4)).astype("float32")
    twin(x, training=True)
    norm = twin.layers[-1].get_layer("norm_quantized")
    step = (float(norm.output_quantizer.range_max.numpy())
            - float(norm.output_quantizer.range_min.numpy())) / 255
    normalized = keras.ops.convert_to_numpy(norm(model.layers[1](x)))
    assert len(np.unique(normalized)) <= 256 and step > 0
    # Weights only: the normalization stays float.
    twin = quantization.quantization_aware(model, scheme="dynamic")
    assert quantization.is_quantization_aware(twin)
    with pytest.raises(ValueError, match="float_layers"):
        quantization.quantization_aware(model, float_layers="ignore")


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


# The dynamic-range scheme: what LiteRT's hybrid kernels compute.


def np_dynamic_rows(x, axes):
    """LiteRT's run-time rounding of a float input to a dynamic-range op:
    each row (the trailing `axes` axes) asymmetric int8 from
    [min(0, row min), max(0, row max)], scale = range / 255, zero point
    rounded (half to even, as the runtime's lrintf) into [-128, 127]."""
    reduce = tuple(range(x.ndim - axes, x.ndim))
    low = np.minimum(x.min(reduce, keepdims=True), 0.0)
    high = np.maximum(x.max(reduce, keepdims=True), 0.0)
    scale = (high - low) / 255.0
    zero_point = np.clip(np.round(-128 - low / scale), -128, 127)
    q = np.clip(np.round(x / scale) + zero_point, -128, 127)
    return (q - zero_point) * scale


@pytest.mark.parametrize("axes", [1, 2, 3])
def test_dynamic_rows_match_the_runtimes_rounding(axes):
    x = (rng.normal(size=(3, 4, 5, 6)) * 2 + 0.5).astype("float32")
    x[0] = np.abs(x[0])  # a row with no negative value: range from 0
    import tensorflow as tf

    tensor = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(tensor)
        got = quantization._fake.quantize_rows(tensor, axes)
        total = tf.reduce_sum(got * 3.0)
    np.testing.assert_allclose(
        got.numpy(), np_dynamic_rows(x, axes), rtol=1e-5, atol=1e-6
    )
    # Straight through: the gradient of the rounding is the identity.
    np.testing.assert_allclose(tape.gradient(total, tensor).numpy(), 3.0)
    # Rounding again changes nothing that matters: each row has 256 levels.
    levels = [len(np.unique(r)) for r in got.numpy().reshape(-1, 6)]
    assert max(levels) <= 256


def test_attention_projection_kernels_round_per_output_unit():
    """An `EinsumDense` kernel is rounded per element of its axes that
    reach the output (the file's flattened fully connected weights)."""
    from keras_distill.quantization._layers import quantize_kernel

    query = keras.layers.EinsumDense("abc,cde->abde", (5, 2, 3))
    query.build((None, 5, 4))
    output = keras.layers.EinsumDense("abcd,cde->abe", (5, 4))
    output.build((None, 5, 2, 3))
    for layer, axes in ((query, (0,)), (output, (0, 1))):
        kernel = rng.normal(size=layer.kernel.shape).astype("float32")
        kept = [a for a in range(kernel.ndim) if a not in axes]
        moved = np.transpose(kernel, list(axes) + kept)
        flat = moved.reshape(int(np.prod(moved.shape[: len(axes)])), -1)
        want, _ = np_weight_grid(flat)
        want = np.transpose(
            want.reshape(moved.shape),
            np.argsort(list(axes) + kept),
        )
        got = keras.ops.convert_to_numpy(quantize_kernel(layer, kernel))
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_dynamic_twin_rounds_what_the_converter_rounds():
    """Under "dynamic": inputs rounded per row and weights per channel
    for kernels of at least 1,024 weights; a smaller kernel stays float,
    and an embedding table is on one symmetric grid."""
    tokens = keras.Input((6,), dtype="int32")
    h = keras.layers.Embedding(64, 32, name="table")(tokens)
    h = keras.layers.Dense(48, name="big")(h)  # 1,536 weights
    out = keras.layers.Dense(8, name="small")(h)  # 384 weights
    model = keras.Model(tokens, out)
    x = rng.integers(0, 64, (5, 6)).astype("int32")
    twin = quantization.quantization_aware(model, "dynamic")
    got = keras.ops.convert_to_numpy(twin(x))

    table = model.get_layer("table").embeddings.numpy()
    scale = np.abs(table).max() / 127.0
    table = np.clip(np.round(table / scale), -127, 127) * scale
    big, small = model.get_layer("big"), model.get_layer("small")
    kernel, _ = np_weight_grid(big.kernel.numpy())
    h = np_dynamic_rows(table[x], 1) @ kernel + big.bias.numpy()
    want = h @ small.kernel.numpy() + small.bias.numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_attention_is_refused_in_full_integer():
    inputs = keras.Input((6, 8))
    h = keras.layers.MultiHeadAttention(2, 4, name="attend")(inputs, inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(h))
    with pytest.raises(ValueError, match="'attend' of type MultiHeadAtt"):
        quantization.quantization_aware(model)
    twin = quantization.quantization_aware(model, scheme="dynamic")
    x = rng.normal(size=(2, 6, 8)).astype("float32")
    assert twin(x).shape == (2, 6, 3)


def test_a_custom_block_of_dense_layers_is_refused_by_name():
    """A layer the twin does not wrap, holding a `Dense` the file would
    quantize: refused under both schemes rather than left float."""

    class Block(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.inner = keras.layers.Dense(40, name="inner")

        def call(self, x):
            return self.inner(x)

    inputs = keras.Input((40,))
    model = keras.Model(inputs, Block(name="block")(inputs))
    for scheme in quantization.SCHEMES:
        with pytest.raises(ValueError, match="'block' of type Block holding"):
            quantization.quantization_aware(model, scheme)


def test_dynamic_rows_follow_the_contracted_axes():
    """An `EinsumDense` whose contracted axis is not the last: each row
    is the contracted axis, wherever it is."""
    inputs = keras.Input((40, 6))
    layer = keras.layers.EinsumDense("abc,bd->acd", (6, 32), name="mix")
    model = keras.Model(inputs, layer(inputs))  # a 1,280-weight kernel
    x = rng.normal(size=(3, 40, 6)).astype("float32")
    got = keras.ops.convert_to_numpy(
        quantization.quantization_aware(model, "dynamic")(x)
    )
    rows = np.moveaxis(np_dynamic_rows(np.moveaxis(x, 1, -1), 1), -1, 1)
    kernel, _ = np_weight_grid(layer.kernel.numpy())
    want = np.einsum("abc,bd->acd", rows, kernel)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_a_gated_attention_rounds_its_gate_too():
    inputs = keras.Input((6, 32))
    attention = keras.layers.MultiHeadAttention(2, 16, use_gate=True)
    model = keras.Model(inputs, attention(inputs, inputs))
    twin = quantization.quantization_aware(model, "dynamic")
    wrapper = twin.layers[-1]
    assert isinstance(wrapper, quantization.QuantizedAttention)
    wrapped = {p.layer.name for p in wrapper.projections}
    assert attention._gate_dense.name in wrapped and len(wrapped) == 5


def test_ops_in_the_graph_are_rounded_and_integer_outputs_pass():
    inputs = keras.Input((8,))
    h = keras.layers.Dense(6, name="dense")(inputs)
    squashed = keras.ops.tanh(h) + h  # two ops: tanh's fixed grid, an add
    model = keras.Model(inputs, [squashed, keras.ops.argmax(h, axis=-1)])
    twin = quantization.quantization_aware(model, float_layers="raise")
    wrappers = {
        type(w.operation).__name__: w
        for w in twin._flatten_layers(recursive=True)
        if isinstance(w, quantization.QuantizedOperation)
    }
    assert set(wrappers) == {"Tanh", "Add"}  # argmax: not float, exact
    assert wrappers["Tanh"].output_quantizer.fixed_range == (-1.0, 127 / 128)
    x = rng.normal(size=(16, 8)).astype("float32")
    values, labels = twin(x, training=True)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(labels),
        keras.ops.convert_to_numpy(model(x)[1]),
    )
    assert len(np.unique(keras.ops.convert_to_numpy(values))) <= 256
