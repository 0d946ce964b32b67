"""Sequence and dense-prediction outputs: KL per position, valid ones only.

The references are NumPy: the KL of every valid position, averaged as
Keras averages the student's own loss (`Σ w · kl / positions`, and over
the valid positions only when a Keras mask is present).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import np_kd
from conftest import np_log_softmax
from test_methods_losses import np_dkd

import keras_distill
from keras_distill import losses

T = 2.0
VOCAB, TIME, CLASSES = 12, 6, 4


def tagger(name, dim, seed, mask_zero=True):
    init = keras.initializers.GlorotUniform(seed=seed)
    inputs = keras.Input((TIME,), dtype="int32")
    h = keras.layers.Embedding(
        VOCAB, dim, mask_zero=mask_zero, embeddings_initializer=init
    )(inputs)
    h = keras.layers.Dense(
        dim, "relu", kernel_initializer=init, name=f"{name}_hidden"
    )(h)
    out = keras.layers.Dense(CLASSES, kernel_initializer=init)(h)
    return keras.Model(inputs, out, name=name)


def padded_tokens(n=16, seed=0):
    """Tokens in [1, VOCAB) followed by zeros, at least one valid each."""
    rng = np.random.default_rng(seed)
    x = rng.integers(1, VOCAB, (n, TIME)).astype("int32")
    lengths = rng.integers(1, TIME + 1, n)
    valid = np.arange(TIME)[None] < lengths[:, None]
    x[~valid] = 0
    y = rng.integers(0, CLASSES, (n, TIME)).astype("int32")
    return x, y, valid


def np_token_kl(t, s, temperature):
    """T² · KL per position (float64)."""
    t = np.asarray(t, np.float64) / temperature
    s = np.asarray(s, np.float64) / temperature
    log_pt, log_ps = np_log_softmax(t), np_log_softmax(s)
    return temperature**2 * (np.exp(log_pt) * (log_pt - log_ps)).sum(-1)


def evaluate(distiller, x, y, loss=None, **kwargs):
    distiller.compile(
        "sgd",
        loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        evaluate_distillation=True,
    )
    return distiller.evaluate(
        x, y, batch_size=len(x), verbose=0, return_dict=True, **kwargs
    )


def test_masked_tagger_averages_over_valid_tokens():
    x, y, valid = padded_tokens()
    teacher, student = tagger("teacher", 8, 1), tagger("student", 4, 2)
    distiller = keras_distill.Distiller(
        teacher, student, losses.LogitsDistillation(T)
    )
    logs = evaluate(distiller, x, y)
    t, s = np.asarray(teacher(x)), np.asarray(student(x))
    expected = np_kd(t[valid], s[valid], T)
    np.testing.assert_allclose(logs["distillation_loss"], expected, rtol=1e-5)
    # The same footing as the student's loss, which Keras masks itself.
    student.compile(
        "sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    keras_loss = student.evaluate(x, y, batch_size=len(x), verbose=0)
    np.testing.assert_allclose(logs["student_loss"], keras_loss, rtol=1e-5)


def test_sample_weighted_tagger_matches_keras_footing():
    x, y, valid = padded_tokens(seed=1)
    w = valid.astype("float32") * np.random.default_rng(2).uniform(
        0.5, 2.0, valid.shape
    ).astype("float32")
    teacher = tagger("teacher", 8, 1, mask_zero=False)
    student = tagger("student", 4, 2, mask_zero=False)
    distiller = keras_distill.Distiller(
        teacher, student, losses.LogitsDistillation(T)
    )
    logs = evaluate(distiller, x, y, sample_weight=w)
    kl = np_token_kl(teacher(x), student(x), T)
    expected = (w * kl).sum() / kl.size
    np.testing.assert_allclose(logs["distillation_loss"], expected, rtol=1e-5)
    student.compile(
        "sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    keras_loss = student.evaluate(
        x, y, sample_weight=w, batch_size=len(x), verbose=0
    )
    np.testing.assert_allclose(logs["student_loss"], keras_loss, rtol=1e-5)


def test_mask_and_sample_weight_together():
    x, y, valid = padded_tokens(seed=3)
    w = np.random.default_rng(4).uniform(0.5, 2.0, valid.shape)
    w = w.astype("float32")
    teacher, student = tagger("teacher", 8, 1), tagger("student", 4, 2)
    distiller = keras_distill.Distiller(
        teacher, student, losses.LogitsDistillation(T)
    )
    logs = evaluate(distiller, x, y, sample_weight=w)
    kl = np_token_kl(teacher(x), student(x), T)
    expected = (w * kl * valid).sum() / valid.sum()
    np.testing.assert_allclose(logs["distillation_loss"], expected, rtol=1e-5)


@pytest.mark.parametrize("kind", ["mask", "sample_weight"])
def test_junk_in_padded_positions_changes_neither_loss_nor_gradient(kind):
    rng = np.random.default_rng(5)
    t = rng.normal(size=(4, TIME, CLASSES)).astype("float32")
    s = rng.normal(size=(4, TIME, CLASSES)).astype("float32")
    valid = np.arange(TIME)[None] < np.array([[2], [6], [3], [1]])
    junk_t, junk_s = t.copy(), s.copy()
    junk_t[~valid] = rng.normal(scale=50, size=junk_t[~valid].shape)
    junk_s[~valid] = rng.normal(scale=50, size=junk_s[~valid].shape)
    if kind == "mask":
        weight = losses.merge_mask(None, tf.constant(valid))
    else:
        weight = tf.constant(valid.astype("float32"))
    results = []
    for a, b in ((t, s), (junk_t, junk_s)):
        b = tf.Variable(b)
        with tf.GradientTape() as tape:
            value = losses.LogitsDistillation(T).compute(
                tf.constant(a), b, sample_weight=weight
            )
        grad = tape.gradient(value, b).numpy()
        results.append((float(value), grad[valid]))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-6)
    np.testing.assert_allclose(results[0][1], results[1][1], atol=1e-7)
    expected = np_kd(t[valid], s[valid], T)
    if kind == "sample_weight":
        expected *= valid.sum() / valid.size
    np.testing.assert_allclose(results[0][0], expected, rtol=1e-5)


def test_junk_tokens_at_zero_weight_leave_training_unchanged():
    x, y, valid = padded_tokens(seed=6)
    junk = x.copy()
    junk[~valid] = np.random.default_rng(7).integers(1, VOCAB, (~valid).sum())
    weights = []
    for inputs in (x, junk):
        teacher = tagger("teacher", 8, 1, mask_zero=False)
        student = tagger("student", 4, 2, mask_zero=False)
        distiller = keras_distill.Distiller(
            teacher, student, losses.LogitsDistillation(T)
        )
        distiller.compile(
            keras.optimizers.SGD(0.1),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        distiller.fit(
            inputs,
            y,
            sample_weight=valid.astype("float32"),
            batch_size=8,
            epochs=2,
            shuffle=False,
            verbose=0,
        )
        weights.append(student.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_dkd_and_soft_targets_on_masked_tokens():
    x, y, valid = padded_tokens(seed=8)
    teacher, student = tagger("teacher", 8, 1), tagger("student", 4, 2)
    t, s = np.asarray(teacher(x)), np.asarray(student(x))
    distiller = keras_distill.Distiller(
        teacher, student, losses.DKD(1.0, 4.0, T, warmup_epochs=0)
    )
    logs = evaluate(distiller, x, y)
    expected = np_dkd(t[valid], s[valid], y[valid], 1.0, 4.0, T)
    np.testing.assert_allclose(logs["distillation_loss"], expected, rtol=1e-5)
    distiller = keras_distill.Distiller(
        teacher, student, losses.SoftTargetDistillation(temperature=T)
    )
    logs = evaluate(distiller, x, y)
    np.testing.assert_allclose(
        logs["distillation_loss"], np_kd(t[valid], s[valid], T), rtol=1e-4
    )


def test_feature_hint_on_masked_hidden_states():
    x, y, valid = padded_tokens(seed=9)
    teacher, student = tagger("teacher", 4, 1), tagger("student", 4, 2)
    distiller = keras_distill.Distiller(
        teacher,
        student,
        losses.FeatureDistillation(
            "teacher_hidden", "student_hidden", adapter=None
        ),
    )
    logs = evaluate(distiller, x, y)
    hidden = [
        keras.Model(m.input, m.get_layer(f"{m.name}_hidden").output)(x)
        for m in (teacher, student)
    ]
    mse = ((np.asarray(hidden[0]) - np.asarray(hidden[1])) ** 2).mean(-1)
    np.testing.assert_allclose(
        logs["distillation_loss"], mse[valid].mean(), rtol=1e-5
    )


def segmenter(name, width, seed):
    init = keras.initializers.GlorotUniform(seed=seed)
    inputs = keras.Input((5, 5, 2))
    h = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(inputs)
    out = keras.layers.Conv2D(CLASSES, 1, kernel_initializer=init)(h)
    return keras.Model(inputs, out, name=name)


def test_segmentation_output_per_pixel():
    rng = np.random.default_rng(10)
    x = rng.normal(size=(6, 5, 5, 2)).astype("float32")
    y = rng.integers(0, CLASSES, (6, 5, 5)).astype("int32")
    w = (rng.uniform(size=(6, 5, 5)) > 0.3).astype("float32")
    teacher, student = segmenter("teacher", 6, 1), segmenter("student", 3, 2)
    distiller = keras_distill.Distiller(
        teacher, student, losses.LogitsDistillation(T)
    )
    logs = evaluate(distiller, x, y)
    kl = np_token_kl(teacher(x), student(x), T)
    np.testing.assert_allclose(logs["distillation_loss"], kl.mean(), rtol=1e-5)
    logs = evaluate(distiller, x, y, sample_weight=w)
    np.testing.assert_allclose(
        logs["distillation_loss"], (w * kl).sum() / kl.size, rtol=1e-5
    )


def test_per_example_weights_weight_the_distillation_term():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(12, 6)).astype("float32")
    y = rng.integers(0, 3, 12)
    w = rng.uniform(0, 2, 12).astype("float32")
    init = keras.initializers.GlorotUniform(seed=1)
    teacher = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(3, kernel_initializer=init)]
    )
    student = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    distiller = keras_distill.Distiller(
        teacher, student, losses.LogitsDistillation(T)
    )
    logs = evaluate(distiller, x, y, sample_weight=w)
    kl = np_token_kl(teacher(x), student(x), T)
    np.testing.assert_allclose(
        logs["distillation_loss"], (w * kl).mean(), rtol=1e-5
    )
