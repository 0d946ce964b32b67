"""Top-k teacher caches for language models: bytes per token, the loss at
k = V equal to the full cache's, invalidation and the stored file."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_distill
from keras_distill import losses
from keras_distill.teachers import TeacherCache

VOCAB, TIME = 24, 5


def token_model(name, dim, seed, round_to_float16=False):
    """Tokens in, (batch, time, VOCAB) logits out."""
    init = keras.initializers.GlorotUniform(seed=seed)
    inputs = keras.Input((TIME,), dtype="int32")
    h = keras.layers.Embedding(VOCAB, dim, embeddings_initializer=init)(inputs)
    h = keras.layers.Dense(dim, "tanh", kernel_initializer=init)(h)
    out = keras.layers.Dense(VOCAB, kernel_initializer=init)(h)
    if round_to_float16:  # logits a float16 cache stores exactly
        out = keras.layers.Lambda(
            lambda z: keras.ops.cast(
                keras.ops.cast(z * 4, "float16"), "float32"
            )
        )(out)
    return keras.Model(inputs, out, name=name)


def tokens(n=12, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, VOCAB, (n, TIME)).astype("int32")
    y = rng.integers(0, VOCAB, (n, TIME)).astype("int32")
    weight = (rng.random((n, TIME)) > 0.25).astype("float32")
    return x, y, weight


def test_bytes_per_token():
    x, _, _ = tokens()
    teacher = token_model("teacher", 8, 1)
    full = TeacherCache(teacher, x, verbose=0)
    top = TeacherCache(teacher, x, verbose=0, top_k=4)
    positions = x.size
    assert full.nbytes == positions * VOCAB * 4
    assert top.nbytes == positions * (4 * 6 + 8)  # float16 + int32, 2 floats


@pytest.mark.parametrize("form", ["rest", "renormalized"])
@pytest.mark.parametrize(
    "make_loss",
    [
        lambda form: losses.LogitsDistillation(1.0, top_k_form=form),
        lambda form: losses.ReverseKL(top_k_form=form),
        lambda form: losses.GeneralizedJSD(0.5, 2.0, top_k_form=form),
    ],
    ids=["forward", "reverse", "jsd"],
)
def test_k_equal_to_the_vocabulary_gives_the_full_cache_loss(make_loss, form):
    x, y, weight = tokens()
    teacher = token_model("teacher", 8, 1, round_to_float16=True)
    reported = []
    for top_k in (None, VOCAB):
        cache = TeacherCache(teacher, x, verbose=0, top_k=top_k)
        student = token_model("student", 4, 2)
        distiller = keras_distill.Distiller(
            teacher, student, make_loss(form), student_loss_weight=0.0
        )
        distiller.compile(loss=None, evaluate_distillation=True)
        data = cache.dataset(x, y, batch_size=len(x), shuffle=False)
        logs = distiller.evaluate(data, verbose=0, return_dict=True)
        reported.append(logs["distillation_loss"])
        # And the value a teacher online gives.
        online = make_loss(form).compute(teacher(x), student(x))
        np.testing.assert_allclose(reported[-1], float(online), rtol=1e-5)
    np.testing.assert_allclose(reported[1], reported[0], rtol=1e-5)


def test_a_small_k_serves_the_top_k_formula():
    from test_token_losses import np_kl
    from test_token_losses import np_top_k

    x, y, _ = tokens()
    teacher = token_model("teacher", 8, 1)
    cache = TeacherCache(teacher, x, verbose=0, top_k=3)
    student = token_model("student", 4, 2)
    distiller = keras_distill.Distiller(
        teacher, student, losses.ReverseKL(), student_loss_weight=0.0
    )
    distiller.compile(loss=None, evaluate_distillation=True)
    data = cache.dataset(x, y, batch_size=len(x), shuffle=False)
    logs = distiller.evaluate(data, verbose=0, return_dict=True)
    t = np.asarray(teacher(x), np.float64)
    # The teacher's values pass through float16 in the cache.
    order = np.argsort(-t, axis=-1)[..., :3]
    stored = np.take_along_axis(t, order, -1).astype("float16")
    np.put_along_axis(t, order, stored.astype(np.float64), -1)
    log_p, log_q = np_top_k(t, np.asarray(student(x)), 3, "rest")
    np.testing.assert_allclose(
        logs["distillation_loss"], np_kl(log_q, log_p).mean(), rtol=1e-3
    )


def test_stored_invalidated_and_refused_where_it_cannot_serve(tmp_path):
    x, y, _ = tokens()
    teacher = token_model("teacher", 8, 1)
    path = tmp_path / "cache.npz"
    built = TeacherCache(teacher, x, verbose=0, top_k=4, path=path)
    again = TeacherCache(teacher, x, verbose=0, top_k=4, path=path)
    assert built.rebuilt and not again.rebuilt
    for name, array in built.outputs.items():
        np.testing.assert_array_equal(again.outputs[name], array)
        assert again.outputs[name].dtype == array.dtype
    with pytest.raises(ValueError, match="built for another top_k"):
        TeacherCache(
            teacher, x, verbose=0, top_k=8, path=path, on_mismatch="error"
        )
    student = token_model("student", 4, 2)
    distiller = keras_distill.Distiller(
        teacher, student, losses.DKD(), student_loss_weight=0.0
    )
    distiller.compile(loss=None)
    data = built.dataset(x, y, batch_size=len(x))
    with pytest.raises(ValueError, match=r"top-k teacher cache.*\['DKD'\]"):
        distiller.fit(data, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="Expected an integer >= 1"):
        TeacherCache(teacher, x, verbose=0, top_k=0)


def test_a_cache_of_another_vocabulary_is_refused_naming_both_sizes():
    x, y, _ = tokens()
    teacher = token_model("teacher", 8, 1)
    # A teacher of 32 tokens: its top-4 ids go past the student's 24.
    inputs = keras.Input((TIME,), dtype="int32")
    h = keras.layers.Embedding(VOCAB, 8)(inputs)
    wide = keras.Model(inputs, keras.layers.Dense(VOCAB + 8)(h))
    wide.layers[-1].set_weights(
        [np.zeros((8, VOCAB + 8)), np.arange(VOCAB + 8, dtype="float32")]
    )  # the largest logits are the last ids, past 24
    student = token_model("student", 4, 2)
    distiller = keras_distill.Distiller(teacher, student, "kd")
    distiller.compile("sgd", keras.losses.SparseCategoricalCrossentropy(True))
    full = TeacherCache(wide, x, verbose=0)
    with pytest.raises(ValueError, match="over 32 classes and the student "
                       "outputs 24"):
        distiller.fit(full.dataset(x, y, batch_size=4), verbose=0)
    top = TeacherCache(wide, x, verbose=0, top_k=4)
    match = r"past the vocabulary of the student \(24 classes\)"
    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        distiller.fit(top.dataset(x, y, batch_size=4), verbose=0)
    # The teacher's own cache serves.
    own = TeacherCache(teacher, x, verbose=0, top_k=4)
    distiller.fit(own.dataset(x, y, batch_size=4), verbose=0)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "xla"])
# A rest of exp(-58.5) takes the one-pass form, exp(-88.5) the other.
@pytest.mark.parametrize("low", [-30.0, -60.0], ids=["one_pass", "own_sum"])
def test_the_students_top_k_and_rest_and_their_gradient(compiled, low):
    from keras_distill.losses.divergences import student_top_k_log_probs

    rng = np.random.default_rng(3)
    logits = rng.normal(0, 3, (2, 3, 10)).astype("float32")
    logits[1, 2] = [30, 29, 28] + [low] * 7
    indices = np.argsort(-logits, axis=-1)[..., :3].astype("int32")
    indices[0, 0] = [9, 0, 4]  # not the largest: a large rest
    up_top = rng.normal(size=(2, 3, 3)).astype("float32")
    up_rest = rng.normal(size=(2, 3)).astype("float32")

    def value_and_gradient(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            top, rest = student_top_k_log_probs(x, indices)
            objective = tf.reduce_sum(top * up_top) + tf.reduce_sum(
                rest * up_rest
            )
        return top, rest, tape.gradient(objective, x)

    run = tf.function(value_and_gradient) if compiled else value_and_gradient
    top, rest, gradient = run(tf.constant(logits))
    # NumPy: the log-softmax at the indices, the rest summed directly,
    # and the gradient of the same objective.
    z = logits.astype(np.float64)
    lse = np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
    q = np.exp(z - lse[..., None])
    inside = np.zeros_like(z, bool)
    np.put_along_axis(inside, indices, True, -1)
    rest_mass = np.where(inside, 0.0, q).sum(-1)
    np.testing.assert_allclose(
        top, np.take_along_axis(z, indices, -1) - lse[..., None], atol=1e-5
    )
    np.testing.assert_allclose(rest, np.log(rest_mass), rtol=1e-4)
    q_out = np.where(inside, 0.0, q) / rest_mass[..., None]
    expected = up_rest[..., None] * (q_out - q)
    expected -= up_top.sum(-1)[..., None] * q
    np.put_along_axis(
        expected,
        indices,
        np.take_along_axis(expected, indices, -1) + up_top,
        -1,
    )
    np.testing.assert_allclose(gradient, expected, atol=1e-5)
    # Which form ran: the one-pass functions themselves on these rows,
    # which they serve only where every rest is above exp(-60).
    from keras_distill.losses import divergences

    flat = tf.constant(logits.reshape(6, 10))
    flat_indices = tf.constant(indices.reshape(6, 3))
    one_top, one_rest, one_lse = divergences._one_pass_top_k_and_rest(
        flat, flat_indices
    )
    assert bool(np.all(one_rest.numpy() > -60)) == (low == -30.0)
    if low == -30.0:
        np.testing.assert_allclose(one_top, np.reshape(top, (6, 3)),
                                   atol=1e-5)
        np.testing.assert_allclose(one_rest, np.reshape(rest, 6), rtol=1e-4)
        one_gradient = divergences._one_pass_gradient(
            flat, flat_indices, one_rest, one_lse,
            (up_top.reshape(6, 3), up_rest.reshape(6)),
        )
        np.testing.assert_allclose(
            one_gradient, expected.reshape(6, 10), atol=1e-5
        )
