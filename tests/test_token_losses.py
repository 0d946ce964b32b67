"""Token-level losses for (batch, time, vocab) outputs: forward KL, reverse
KL, GKD's generalized JSD and the top-k forms, against NumPy references
in float64, with padding and sample weights."""

import keras
import numpy as np
import pytest
from conftest import np_log_softmax
from test_sequences import padded_tokens
from test_sequences import tagger

import keras_distill
from keras_distill import losses
from keras_distill.losses import divergences

RNG = np.random.default_rng(0)


def np_log_probs(logits, t=1.0):
    return np_log_softmax(np.asarray(logits, np.float64) / t)


def np_kl(log_p, log_q):
    return (np.exp(log_p) * (log_p - log_q)).sum(-1)


def np_jsd(log_p, log_q, beta):
    m = beta * np.exp(log_p) + (1 - beta) * np.exp(log_q)
    log_m = np.log(m)
    return beta * np_kl(log_p, log_m) + (1 - beta) * np_kl(log_q, log_m)


def np_reduce(values, weight, reduction):
    weight = np.broadcast_to(weight, values.shape)
    if reduction == "mean_with_sample_weight":
        return (values * weight).sum() / weight.sum()
    return (values * weight).sum() / values.size


def logits(shape, scale=3.0, dtype="float32"):
    return (RNG.normal(size=shape) * scale).astype(dtype)


@pytest.mark.parametrize("reduction", losses.base.REDUCTIONS)
@pytest.mark.parametrize("t", [1.0, 2.0])
def test_reverse_kl_matches_numpy_with_padding(reduction, t):
    teacher, student = logits((3, 5, 11)), logits((3, 5, 11))
    weight = (RNG.random((3, 5)) > 0.3).astype("float32")
    loss = losses.ReverseKL(temperature=t, reduction=reduction)
    got = float(loss.compute(teacher, student, sample_weight=weight))
    per = np_kl(np_log_probs(student, t), np_log_probs(teacher, t))
    expected = t * t * np_reduce(per, weight, reduction)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # Junk at zero-weight positions changes nothing.
    junk_t, junk_s = teacher.copy(), student.copy()
    junk_t[weight == 0] = 1e4
    junk_s[weight == 0] = -1e4
    again = float(loss.compute(junk_t, junk_s, sample_weight=weight))
    np.testing.assert_allclose(again, got, rtol=1e-6)


@pytest.mark.parametrize("beta", [0.1, 0.5, 0.9])
def test_generalized_jsd_matches_numpy(beta):
    teacher, student = logits((4, 3, 9)), logits((4, 3, 9))
    weight = RNG.random((4, 3)).astype("float32")
    loss = losses.GeneralizedJSD(beta=beta, temperature=1.5)
    got = float(loss.compute(teacher, student, sample_weight=weight))
    per = np_jsd(np_log_probs(teacher, 1.5), np_log_probs(student, 1.5), beta)
    expected = 1.5**2 * np_reduce(per, weight, "sum_over_batch_size")
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert 0 < got / 1.5**2 <= np.log(2)  # a bounded divergence


def test_jsd_limits_are_the_two_kls():
    # Its own draw: the β -> 0 limit's error grows with the χ² distance of
    # the two distributions, so the data must not depend on test order.
    rng = np.random.default_rng(1)
    teacher, student = (rng.normal(size=(2, 5, 7)) * 2.0).astype("float32")
    forward = float(losses.LogitsDistillation(1.0).compute(teacher, student))
    reverse = float(losses.ReverseKL().compute(teacher, student))
    at_0 = float(losses.GeneralizedJSD(beta=0.0).compute(teacher, student))
    at_1 = float(losses.GeneralizedJSD(beta=1.0).compute(teacher, student))
    np.testing.assert_allclose(at_0, forward, rtol=1e-6)
    np.testing.assert_allclose(at_1, reverse, rtol=1e-6)
    assert abs(forward - reverse) > 1e-3  # the two ends differ
    # Continuous in the sense GKD uses: JSD(β) / β -> KL(p || q) as β -> 0.
    small = float(losses.GeneralizedJSD(beta=1e-3).compute(teacher, student))
    np.testing.assert_allclose(small / 1e-3, forward, rtol=2e-2)
    with pytest.raises(ValueError, match=r"Expected a float in \[0, 1\]"):
        losses.GeneralizedJSD(beta=1.5)


@pytest.mark.parametrize(
    "loss",
    [
        losses.LogitsDistillation(1.0),
        losses.ReverseKL(),
        losses.GeneralizedJSD(0.5),
    ],
    ids=["forward", "reverse", "jsd"],
)
def test_a_65536_token_vocabulary_in_bfloat16(loss):
    vocab = 65536
    teacher = keras.ops.cast(logits((2, 3, vocab), scale=6.0), "bfloat16")
    student = keras.ops.cast(logits((2, 3, vocab), scale=6.0), "bfloat16")
    got = float(loss.compute(teacher, student))
    t = np.asarray(keras.ops.cast(teacher, "float32"), np.float64)
    s = np.asarray(keras.ops.cast(student, "float32"), np.float64)
    log_p, log_q = np_log_probs(t), np_log_probs(s)
    per = {
        "LogitsDistillation": np_kl(log_p, log_q),
        "ReverseKL": np_kl(log_q, log_p),
        "GeneralizedJSD": np_jsd(log_p, log_q, 0.5),
    }[type(loss).__name__]
    assert np.isfinite(got)
    np.testing.assert_allclose(got, per.mean(), rtol=1e-4)


def top_k_teacher(teacher, k):
    """The dict a top-k `TeacherCache` serves, in NumPy."""
    order = np.argsort(-teacher, axis=-1)[..., :k]
    values = np.take_along_axis(teacher, order, -1)
    full = np.exp(teacher.astype(np.float64))
    z = np.log(full.sum(-1))
    outside = full.sum(-1) - np.take_along_axis(full, order, -1).sum(-1)
    with np.errstate(divide="ignore"):
        log_rest = np.maximum(np.log(np.maximum(outside, 0)) - z, -1e4)
    return {
        divergences.TOP_K_VALUES: values.astype("float32"),
        divergences.TOP_K_INDICES: order.astype("int32"),
        divergences.LOG_NORMALIZER: z.astype("float32"),
        divergences.LOG_REST: log_rest.astype("float32"),
    }


def np_top_k(teacher, student, k, form, t=1.0):
    """Both models' log-probabilities over the top-k buckets (float64)."""
    teacher = np.asarray(teacher, np.float64)
    student = np.asarray(student, np.float64)
    order = np.argsort(-teacher, axis=-1)[..., :k]
    if form == "renormalized":
        v = np.take_along_axis(teacher, order, -1) / t
        s = np.take_along_axis(student, order, -1) / t
        return np_log_softmax(v), np_log_softmax(s)
    p = np.take_along_axis(np.exp(np_log_softmax(teacher)), order, -1)
    q = np.take_along_axis(np.exp(np_log_softmax(student)), order, -1)
    p = np.concatenate([p, 1 - p.sum(-1, keepdims=True)], -1)
    q = np.concatenate([q, 1 - q.sum(-1, keepdims=True)], -1)
    return np_log_softmax(np.log(p) / t), np_log_softmax(np.log(q) / t)


@pytest.mark.parametrize("form", divergences.TOP_K_FORMS)
@pytest.mark.parametrize("t", [1.0, 2.0])
def test_top_k_forms_match_their_formulas(form, t):
    teacher, student = logits((3, 4, 20)), logits((3, 4, 20))
    cached = top_k_teacher(teacher, 5)
    for loss, divergence in (
        (losses.LogitsDistillation(t, top_k_form=form), np_kl),
        (losses.ReverseKL(t, top_k_form=form), lambda p, q: np_kl(q, p)),
        (
            losses.GeneralizedJSD(0.5, t, top_k_form=form),
            lambda p, q: np_jsd(p, q, 0.5),
        ),
    ):
        got = float(loss.compute(cached, student))
        log_p, log_q = np_top_k(teacher, student, 5, form, t)
        expected = t * t * divergence(log_p, log_q).mean()
        np.testing.assert_allclose(got, expected, rtol=2e-5)


@pytest.mark.parametrize("form", divergences.TOP_K_FORMS)
def test_top_k_with_every_token_is_the_full_loss(form):
    teacher, student = logits((2, 6, 16)), logits((2, 6, 16))
    weight = (RNG.random((2, 6)) > 0.4).astype("float32")
    full_cache = top_k_teacher(teacher, 16)
    for loss in (
        losses.LogitsDistillation(1.0, top_k_form=form),
        losses.ReverseKL(top_k_form=form),
        losses.GeneralizedJSD(0.3, top_k_form=form),
    ):
        full = float(loss.compute(teacher, student, sample_weight=weight))
        top = float(loss.compute(full_cache, student, sample_weight=weight))
        np.testing.assert_allclose(top, full, rtol=1e-5, atol=1e-6)


def test_top_k_gradients_are_finite_with_an_empty_rest():
    import tensorflow as tf

    teacher = logits((2, 8))
    student = tf.Variable(logits((2, 8)))
    cached = top_k_teacher(teacher, 8)
    with tf.GradientTape() as tape:
        value = losses.ReverseKL().compute(cached, student)
    gradient = tape.gradient(value, student)
    assert np.isfinite(gradient.numpy()).all()


def test_distiller_with_reverse_kl_averages_valid_tokens():
    x, y, valid = padded_tokens()
    teacher, student = tagger("teacher", 8, 1), tagger("student", 4, 2)
    loss = losses.ReverseKL(reduction="mean_with_sample_weight")
    distiller = keras_distill.Distiller(teacher, student, loss)
    distiller.compile(
        "sgd",
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        evaluate_distillation=True,
    )
    weight = RNG.random(valid.shape).astype("float32")
    logs = distiller.evaluate(
        x,
        y,
        sample_weight=weight,
        batch_size=len(x),
        verbose=0,
        return_dict=True,
    )
    t, s = np.asarray(teacher(x)), np.asarray(student(x))
    per = np_kl(np_log_probs(s), np_log_probs(t))
    w = weight * valid  # the Keras mask of the padded tokens
    expected = (per * w).sum() / w.sum()
    np.testing.assert_allclose(logs["distillation_loss"], expected, rtol=1e-5)


def test_token_losses_round_trip_their_config():
    for loss in (
        losses.ReverseKL(2.0, reduction="mean_with_sample_weight"),
        losses.GeneralizedJSD(0.25, top_k_form="renormalized"),
        losses.LogitsDistillation(3.0, top_k_form="renormalized"),
    ):
        again = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(loss)
        )
        assert again.get_config() == loss.get_config()
    assert type(losses.get("jsd")) is losses.GeneralizedJSD
    assert type(losses.get("reverse_kl")) is losses.ReverseKL
    with pytest.raises(ValueError, match="Expected one of"):
        losses.ReverseKL(reduction="sum")
    with pytest.raises(ValueError, match="top_k_form='dense'"):
        losses.GeneralizedJSD(top_k_form="dense")
