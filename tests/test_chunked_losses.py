"""The token losses over chunks of positions (`keras_distill.losses.chunks`):
values and gradients equal to the unchunked form and to NumPy, with masks,
sample weights, both reductions, top-k teachers, bfloat16 logits, unknown
batch sizes, the no-gradient path and a `Distiller`."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_token_losses import np_kl
from test_token_losses import np_log_probs
from test_token_losses import top_k_teacher

import keras_distill
from keras_distill import losses
from keras_distill.losses import chunks

RNG = np.random.default_rng(7)
SHAPE = (3, 7, 13)  # 21 positions


def logits(shape, scale=3.0):
    """Random logits from this module's own generator."""
    return (RNG.normal(size=shape) * scale).astype("float32")


def value_and_gradient(loss, teacher, student, weight=None):
    student = tf.Variable(student)
    with tf.GradientTape() as tape:
        value = loss.compute(teacher, student, sample_weight=weight)
    return float(value), tape.gradient(value, student).numpy()


def assert_same_gradient(got, expected):
    """Equal to 1e-5 relative (in norm), and elementwise up to float32
    rounding: the chunked form scales each position's gradient by its
    upstream weight after the softmax's backward pass, not before."""
    error = np.linalg.norm(got - expected) / np.linalg.norm(expected)
    assert error <= 1e-5, error
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-9)


def with_chunks(loss, chunk_size):
    config = loss.get_config()
    config["chunk_size"] = chunk_size
    return type(loss).from_config(config)


LOSSES = {
    "forward": lambda r: losses.LogitsDistillation(2.0, reduction=r),
    "reverse": lambda r: losses.ReverseKL(1.5, reduction=r),
    "jsd": lambda r: losses.GeneralizedJSD(0.3, 2.0, reduction=r),
    "forward_top_k_rest": lambda r: losses.LogitsDistillation(
        2.0, reduction=r, top_k_form="rest"
    ),
    "reverse_top_k_renormalized": lambda r: losses.ReverseKL(
        1.0, reduction=r, top_k_form="renormalized"
    ),
    "jsd_top_k_rest": lambda r: losses.GeneralizedJSD(
        0.5, reduction=r, top_k_form="rest"
    ),
}


@pytest.mark.parametrize("reduction", losses.base.REDUCTIONS)
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_chunks_equal_the_unchunked_loss_and_gradient(name, reduction):
    teacher, student = logits(SHAPE), logits(SHAPE)
    if "top_k" in name:
        teacher = top_k_teacher(teacher, 4)
    weight = (RNG.random(SHAPE[:2]) > 0.3).astype("float32")
    weight *= RNG.random(SHAPE[:2]).astype("float32") + 0.5
    loss = LOSSES[name](reduction)
    value, gradient = value_and_gradient(
        with_chunks(loss, None), teacher, student, weight
    )
    # 4 does not divide 21 positions; 64 is more than there are.
    for size in (1, 4, 64):
        got, got_gradient = value_and_gradient(
            with_chunks(loss, size), teacher, student, weight
        )
        np.testing.assert_allclose(got, value, rtol=1e-5)
        assert_same_gradient(got_gradient, gradient)
    # Zero weights: no gradient at those positions.
    assert not np.abs(got_gradient[weight == 0]).any()


def test_chunked_forward_kl_matches_numpy():
    t = 2.0
    teacher, student = logits(SHAPE), logits(SHAPE)
    weight = RNG.random(SHAPE[:2]).astype("float32")
    loss = losses.LogitsDistillation(t, chunk_size=4)
    value, gradient = value_and_gradient(loss, teacher, student, weight)
    log_p, log_q = np_log_probs(teacher, t), np_log_probs(student, t)
    size = weight.size
    expected = t * t * (np_kl(log_p, log_q) * weight).sum() / size
    # d/ds of T² KL(p || q) / size, q = softmax(s / T): T (q - p) w / size.
    expected_gradient = (
        t * (np.exp(log_q) - np.exp(log_p)) * weight[..., None] / size
    )
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    np.testing.assert_allclose(gradient, expected_gradient, atol=1e-7)


def test_auto_chunks_large_vocabularies_only():
    assert chunks.rows_per_chunk("auto", 32768) == 32
    assert chunks.rows_per_chunk("auto", 262144) == 4
    assert chunks.rows_per_chunk("auto", 10) is None
    assert chunks.rows_per_chunk("auto", None) is None
    assert chunks.rows_per_chunk(None, 262144) is None
    assert chunks.rows_per_chunk(3, 10) == 3
    assert losses.ReverseKL().chunk_size == "auto"


@pytest.mark.parametrize(
    # float16's subnormals are 6e-8 apart: two of them for tiny gradients.
    "dtype, tolerance, atol",
    [("bfloat16", 1e-2, 1e-9), ("float16", 2e-3, 1.2e-7)],
)
def test_half_precision_logits_keep_their_dtype_and_values(
    dtype, tolerance, atol
):
    """The gradient is taken in float32 with its upstream weights applied,
    then cast once to the logits' dtype, as unchunked (so a float16
    loss scale multiplies before the rounding)."""
    vocab = 32768  # chunked under "auto"
    teacher = keras.ops.cast(logits((2, 5, vocab), 6.0), dtype)
    student = tf.Variable(keras.ops.cast(logits((2, 5, vocab), 6.0), dtype))
    scale = 1024.0  # a loss scale, as mixed_float16 applies
    results = {}
    for size in ("auto", None):
        loss = losses.GeneralizedJSD(0.5, chunk_size=size)
        with tf.GradientTape() as tape:
            value = loss.compute(teacher, student)
            scaled = value * scale
        gradient = tape.gradient(scaled, student)
        assert value.dtype == "float32" and gradient.dtype == dtype
        results[size] = float(value), keras.ops.convert_to_numpy(
            keras.ops.cast(gradient, "float32")
        )
    np.testing.assert_allclose(results["auto"][0], results[None][0], 1e-6)
    got, expected = results["auto"][1], results[None][1]
    assert np.isfinite(got).all()
    error = np.linalg.norm(got - expected) / np.linalg.norm(expected)
    assert error <= tolerance / 4, error
    np.testing.assert_allclose(got, expected, rtol=tolerance, atol=atol)


def test_a_teacher_that_is_differentiated_is_compared_unchunked():
    teacher = tf.Variable(logits(SHAPE))
    student = tf.Variable(logits(SHAPE))
    gradients = {}
    for size in (4, None):
        loss = losses.ReverseKL(chunk_size=size)
        with tf.GradientTape() as tape:
            value = loss.compute(teacher, student)
        gradients[size] = tape.gradient(value, [teacher, student])
    for chunked, plain in zip(gradients[4], gradients[None]):
        np.testing.assert_allclose(chunked.numpy(), plain.numpy(), 1e-6)


def test_a_loss_traced_apart_from_its_tape_still_differentiates():
    teacher, student = logits(SHAPE), tf.Variable(logits(SHAPE))
    loss = losses.LogitsDistillation(2.0, chunk_size=4)
    expected = value_and_gradient(
        with_chunks(loss, None), teacher, student.numpy()
    )

    @tf.function
    def value(s):
        return loss.compute(teacher, s)

    value(student)  # traced once without a tape
    with tf.GradientTape() as tape:
        got = value(student)
    np.testing.assert_allclose(float(got), expected[0], rtol=1e-5)
    assert_same_gradient(tape.gradient(got, student).numpy(), expected[1])


def test_unknown_batch_size_and_no_gradient_path():
    teacher, student = logits(SHAPE), logits(SHAPE)
    loss = losses.ReverseKL(chunk_size=4)
    expected = float(with_chunks(loss, None).compute(teacher, student))
    spec = tf.TensorSpec((None, None, SHAPE[-1]), "float32")

    @tf.function(input_signature=[spec, spec])
    def evaluate(t, s):  # no tape: values only
        return loss.compute(t, s)

    got = float(evaluate(teacher, student))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # A batch smaller than one chunk.
    small = float(evaluate(teacher[:1, :2], student[:1, :2]))
    reference = float(
        with_chunks(loss, None).compute(teacher[:1, :2], student[:1, :2])
    )
    np.testing.assert_allclose(small, reference, rtol=1e-5)


def test_bad_chunk_sizes_are_refused_and_configs_round_trip():
    for bad in (0, -2, 1.5, "big", True):
        with pytest.raises(ValueError, match="chunk_size"):
            losses.LogitsDistillation(chunk_size=bad)
    loss = losses.GeneralizedJSD(0.2, chunk_size=16)
    again = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(loss)
    )
    assert again.chunk_size == 16
    assert again.get_config() == loss.get_config()


def test_a_distiller_step_is_the_same_chunked():
    """One training step of a sequence student with a padding mask: the
    same weights whether the loss is chunked or not."""
    from test_sequences import padded_tokens
    from test_sequences import tagger

    x, y, _ = padded_tokens()
    teacher = tagger("teacher", 8, 1)
    weights = {}
    for size in (None, 3):
        student = tagger("student", 4, 2)
        distiller = keras_distill.Distiller(
            teacher,
            student,
            losses.ReverseKL(
                2.0, chunk_size=size, reduction="mean_with_sample_weight"
            ),
            student_loss_weight=0.5,
        )
        distiller.compile(
            keras.optimizers.SGD(0.5),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        logs = distiller.fit(
            x, y, batch_size=len(x), epochs=1, verbose=0, shuffle=False
        ).history
        weights[size] = [w.numpy() for w in student.weights], logs
    (a, logs_a), (b, logs_b) = weights[None], weights[3]
    for left, right in zip(a, b):
        np.testing.assert_allclose(left, right, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        logs_a["distillation_loss"], logs_b["distillation_loss"], rtol=1e-5
    )


@pytest.mark.parametrize("name", ["forward", "jsd_top_k_rest"])
def test_compiled_chunks_equal_the_unchunked_loss(name):
    """Inside a `tf.function` the loop over chunks is compiled with XLA."""
    teacher, student = logits(SHAPE), logits(SHAPE)
    if "top_k" in name:
        teacher = top_k_teacher(teacher, 4)
    weight = RNG.random(SHAPE[:2]).astype("float32")
    loss = LOSSES[name]("mean_with_sample_weight")
    value, gradient = value_and_gradient(
        with_chunks(loss, None), teacher, student, weight
    )
    for size in (4, 64):
        chunked = with_chunks(loss, size)
        variable = tf.Variable(student)

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                out = chunked.compute(teacher, variable, sample_weight=weight)
            return out, tape.gradient(out, variable)

        got, got_gradient = step()
        np.testing.assert_allclose(float(got), value, rtol=1e-5)
        assert_same_gradient(got_gradient.numpy(), gradient)
