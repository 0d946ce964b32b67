"""DKD, teacher-free KD, attention transfer and RKD against NumPy."""

import keras
import numpy as np
import pytest
from conftest import np_kd
from conftest import np_log_softmax

from keras_distill import losses

RNG = np.random.default_rng(11)
TEACHER = (RNG.normal(size=(6, 5)) * 3).astype("float32")
STUDENT = (RNG.normal(size=(6, 5)) * 2).astype("float32")
LABELS = np.array([0, 1, 4, 2, 2, 3], "int32")


def value(x):
    return float(keras.ops.convert_to_numpy(x))


def np_dkd(t, s, y, alpha, beta, temperature):
    """NumPy reference, written as in the DKD paper (float64)."""
    t = np.asarray(t, np.float64) / temperature
    s = np.asarray(s, np.float64) / temperature
    gt = np.eye(t.shape[1])[y]
    p_t, p_s = np.exp(np_log_softmax(t)), np.exp(np_log_softmax(s))
    b_t = np.stack([(p_t * gt).sum(1), (p_t * (1 - gt)).sum(1)], 1)
    b_s = np.stack([(p_s * gt).sum(1), (p_s * (1 - gt)).sum(1)], 1)
    tckd = (b_t * (np.log(b_t) - np.log(b_s))).sum(1)
    nckd = np.zeros(len(t))
    for i in range(len(t)):
        keep = gt[i] == 0
        q_t = np.exp(np_log_softmax(t[i, keep]))
        q_s = np.exp(np_log_softmax(s[i, keep]))
        nckd[i] = (q_t * (np.log(q_t) - np.log(q_s))).sum()
    return temperature**2 * (alpha * tckd + beta * nckd).mean()


@pytest.mark.parametrize(
    "alpha, beta, temperature", [(1.0, 8.0, 4.0), (0.5, 2.0, 1.0)]
)
def test_dkd_matches_numpy(alpha, beta, temperature):
    loss = losses.DKD(alpha, beta, temperature, warmup_epochs=0)
    got = value(loss(TEACHER, STUDENT, y_true=LABELS))
    want = np_dkd(TEACHER, STUDENT, LABELS, alpha, beta, temperature)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_dkd_accepts_one_hot_labels():
    loss = losses.DKD(warmup_epochs=0)
    one_hot = np.eye(5, dtype="float32")[LABELS]
    np.testing.assert_allclose(
        value(loss(TEACHER, STUDENT, y_true=one_hot)),
        value(loss(TEACHER, STUDENT, y_true=LABELS)),
        rtol=1e-6,
    )


def test_dkd_with_beta_zero_is_the_binary_kl_only():
    loss = losses.DKD(alpha=1.0, beta=0.0, temperature=2.0, warmup_epochs=0)
    t, s = TEACHER / 2.0, STUDENT / 2.0
    p_t = np.exp(np_log_softmax(t.astype(np.float64)))
    p_s = np.exp(np_log_softmax(s.astype(np.float64)))
    rows = np.arange(len(LABELS))
    a, b = p_t[rows, LABELS], p_s[rows, LABELS]
    binary = a * np.log(a / b) + (1 - a) * np.log((1 - a) / (1 - b))
    np.testing.assert_allclose(
        value(loss(TEACHER, STUDENT, y_true=LABELS)),
        4.0 * binary.mean(),
        rtol=1e-6,
    )


def test_dkd_equals_kd_decomposition():
    # KD = TCKD + (1 - p_t[target]) · NCKD (the paper's equation 6).
    temperature = 3.0
    loss_t = losses.DKD(1.0, 0.0, temperature, warmup_epochs=0)
    loss_n = losses.DKD(0.0, 1.0, temperature, warmup_epochs=0)
    p_t = np.exp(np_log_softmax(TEACHER.astype(np.float64) / temperature))
    weight = 1 - p_t[np.arange(len(LABELS)), LABELS]
    for i in range(len(LABELS)):
        t, s, y = TEACHER[i : i + 1], STUDENT[i : i + 1], LABELS[i : i + 1]
        combined = value(loss_t(t, s, y_true=y)) + weight[i] * value(
            loss_n(t, s, y_true=y)
        )
        np.testing.assert_allclose(
            combined, np_kd(t, s, temperature), rtol=1e-5
        )


def test_dkd_target_only_teacher_leaves_tckd():
    # All mass on the target: the teacher's non-target distribution is
    # uniform, so NCKD is the KL from uniform to the student's.
    teacher = np.full((1, 4), -30.0, "float32")
    teacher[0, 2] = 30.0
    student = np.array([[0.5, -1.0, 2.0, 0.0]], "float32")
    y = np.array([2], "int32")
    loss = losses.DKD(alpha=0.0, beta=1.0, temperature=1.0, warmup_epochs=0)
    q_s = np.exp(np_log_softmax(student[0, [0, 1, 3]].astype(np.float64)))
    want = (np.full(3, 1 / 3) * np.log((1 / 3) / q_s)).sum()
    np.testing.assert_allclose(
        value(loss(teacher, student, y_true=y)), want, rtol=1e-5
    )


def test_dkd_warmup_scales_linearly_by_epoch():
    loss = losses.DKD(warmup_epochs=4)
    full = np_dkd(TEACHER, STUDENT, LABELS, 1.0, 8.0, 4.0)
    for epoch, factor in [(0, 0.25), (2, 0.75), (3, 1.0), (9, 1.0)]:
        loss.on_epoch_begin(epoch)
        assert loss.warmup_factor == factor
        np.testing.assert_allclose(
            value(loss(TEACHER, STUDENT, y_true=LABELS)),
            factor * full,
            rtol=1e-6,
        )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(beta=-1.0), "Expected a non-negative float. Received: beta=-1"),
        (dict(temperature=0), "Received: temperature=0"),
        (dict(warmup_epochs=1.5), "Received: warmup_epochs=1.5"),
    ],
)
def test_dkd_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        losses.DKD(**kwargs)


def test_dkd_without_labels_says_so():
    with pytest.raises(ValueError, match="needs the labels"):
        losses.DKD()(TEACHER, STUDENT)


def test_teacher_free_kd_matches_numpy():
    loss = losses.TeacherFreeKD(correct_prob=0.8, temperature=2.0)
    q = np.full((6, 5), 0.2 / 4)
    q[np.arange(6), LABELS] = 0.8
    want = np_kd(np.log(q), STUDENT, 2.0)
    np.testing.assert_allclose(
        value(loss(None, STUDENT, y_true=LABELS)), want, rtol=1e-6
    )
    with pytest.raises(ValueError, match="correct_prob=1.0"):
        losses.TeacherFreeKD(correct_prob=1.0)


def np_attention(f, p):
    a = (np.abs(f.astype(np.float64)) ** p).mean(-1).reshape(len(f), -1)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_attention_transfer_matches_numpy():
    rng = np.random.default_rng(3)
    t1, s1 = rng.normal(size=(2, 2, 4, 4, 6)).astype("float32")
    t2 = rng.normal(size=(2, 2, 2, 8)).astype("float32")
    s2 = rng.normal(size=(2, 2, 2, 3)).astype("float32")
    loss = losses.AttentionTransfer([("a", "b"), ("c", "d")], p=2, beta=1e3)
    got = value(loss([t1, t2], [s1, s2]))
    want = 500 * sum(
        ((np_attention(s, 2) - np_attention(t, 2)) ** 2).mean()
        for t, s in [(t1, s1), (t2, s2)]
    )
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # Identical attention maps (channel counts may differ) cost nothing.
    same = np.concatenate([t2, t2], axis=-1)
    assert value(loss([t1, t2], [t1, same])) < 1e-9


def test_attention_transfer_rejects_bad_pairs():
    with pytest.raises(ValueError, match="Expected a non-empty list"):
        losses.AttentionTransfer([("a",)])
    loss = losses.AttentionTransfer(("a", "b"))
    assert loss.pairs == [["a", "b"]]
    with pytest.raises(ValueError, match="Expected feature maps"):
        loss.build([(None, 8)], [(None, 8)])


def np_rkd(t, s, wd, wa):
    def dist(e):
        d = np.linalg.norm(e[:, None] - e[None], axis=-1)
        n = len(e)
        return d / (d.sum() / (n * (n - 1)))

    def angle(e):
        diff = e[None, :, :] - e[:, None, :]
        norm = np.linalg.norm(diff, axis=-1, keepdims=True)
        unit = np.divide(diff, norm, out=np.zeros_like(diff), where=norm > 0)
        return np.einsum("ijk,ilk->ijl", unit, unit)

    def huber(a, b):
        x = np.abs(a - b)
        return np.where(x < 1, 0.5 * x * x, x - 0.5).mean()

    t, s = t.astype(np.float64), s.astype(np.float64)
    return wd * huber(dist(s), dist(t)) + wa * huber(angle(s), angle(t))


def test_rkd_matches_numpy_and_is_scale_invariant():
    rng = np.random.default_rng(5)
    t = rng.normal(size=(7, 6)).astype("float32")
    s = rng.normal(size=(7, 3)).astype("float32")
    loss = losses.RelationalDistillation(distance_weight=25, angle_weight=50)
    got = value(loss(t, s))
    np.testing.assert_allclose(got, np_rkd(t, s, 25, 50), rtol=1e-5)
    np.testing.assert_allclose(value(loss(t * 7.0, s * 0.1)), got, rtol=1e-5)
    # The same geometry (an isometry of the batch) costs nothing.
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    assert value(loss(t, (t @ q).astype("float32") * 3.0)) < 1e-4


def test_new_losses_round_trip_through_config():
    for loss in [
        losses.DKD(0.5, 4.0, 2.0, warmup_epochs=3, name="d"),
        losses.TeacherFreeKD(0.95, 3.0),
        losses.AttentionTransfer([("a", "b")], p=1.0, beta=10.0),
        losses.RelationalDistillation(1.0, 2.0, "emb", "emb2"),
        losses.FeatureDistillation("t", "s", loss="mae", adapter=None),
    ]:
        config = keras.saving.serialize_keras_object(loss)
        clone = keras.saving.deserialize_keras_object(config)
        assert type(clone) is type(loss)
        assert clone.get_config() == loss.get_config()


@pytest.mark.parametrize(
    "name, cls",
    [
        ("dkd", losses.DKD),
        ("hint", losses.FeatureDistillation),
        ("at", losses.AttentionTransfer),
        ("rkd", losses.RelationalDistillation),
        ("teacher_free", losses.TeacherFreeKD),
    ],
)
def test_registry_knows_every_method(name, cls):
    assert name in losses.known_names()
    if cls in (losses.FeatureDistillation, losses.AttentionTransfer):
        return  # They need layer names: built from a config, not a name.
    assert type(losses.get(name)) is cls
