"""On-policy and sequence-level distillation (`keras_distill.on_policy`),
against NumPy references of the sampling loop and the loss."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_distill
from keras_distill import losses
from keras_distill import on_policy as generation

VOCABULARY, WINDOW = 7, 8
TINY = np.finfo(np.float32).tiny


def causal_lm(dim, seed, name):
    """Token ids in, next-token logits out; position t sees 0..t only."""
    init = keras.initializers.GlorotUniform(seed=seed)
    tokens = keras.Input((WINDOW,), dtype="int32")
    h = keras.layers.Embedding(VOCABULARY, dim, embeddings_initializer=init)(
        tokens
    )
    h = keras.layers.Conv1D(
        dim, 3, padding="causal", activation="tanh", kernel_initializer=init
    )(h)
    logits = keras.layers.Dense(VOCABULARY, kernel_initializer=init)(h)
    return keras.Model(tokens, logits, name=name)


@pytest.fixture(scope="module")
def models():
    return causal_lm(16, 1, "teacher"), causal_lm(4, 2, "student")


def data(rows=4, seed=0):
    rng = np.random.default_rng(seed)
    stream = rng.integers(0, VOCABULARY, (rows, WINDOW + 1)).astype("int32")
    return stream[:, :-1], stream[:, 1:]


def fold(seed, *data):
    """`tf.random.experimental.stateless_fold_in`, one int64 value at a
    time (the documented seeds of `keras_distill.on_policy.step_seed`)."""
    seed = tf.constant(seed, "int64")
    for value in data:
        value = tf.constant(value, "int64")
        seed = tf.random.experimental.stateless_fold_in(seed, value)
    return seed


def numpy_continue(model, tokens, prompts, new_tokens, temperature, seed):
    """The sampling loop in NumPy: the logits at the last filled
    position, softened, plus Gumbel noise of the documented uniforms,
    argmax, written after the prompt."""
    tokens = np.array(tokens)
    rows = len(tokens)
    for i in range(new_tokens):
        logits = np.asarray(model(tokens, training=False), np.float32)
        last = logits[np.arange(rows), prompts + i - 1]
        if temperature > 0:
            u = tf.random.stateless_uniform(
                (rows, VOCABULARY), fold(seed, i + 1), minval=TINY, maxval=1.0
            ).numpy()
            last = last / np.float32(temperature) - np.log(-np.log(u))
        tokens[np.arange(rows), prompts + i] = last.argmax(-1)
    return tokens


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_sampled_tokens_equal_a_numpy_loop(models, temperature):
    _, student = models
    tokens, _ = data()
    prompts = np.array([1, 3, 2, 5], "int32")
    got = generation.sample(
        student, tokens, prompts, new_tokens=3, temperature=temperature,
        seed=[4, 0],
    )
    expected = numpy_continue(
        student, tokens, prompts, 3, temperature, [4, 0]
    )
    np.testing.assert_array_equal(got, expected)
    # The prompts, and what follows the new tokens, are untouched.
    for row, p in enumerate(prompts):
        np.testing.assert_array_equal(got[row, :p], tokens[row, :p])
        np.testing.assert_array_equal(got[row, p + 3:], tokens[row, p + 3:])
    # Seeded: the same call gives the same tokens, another seed others.
    again = generation.sample(
        student, tokens, prompts, 3, temperature, seed=[4, 0]
    )
    np.testing.assert_array_equal(again, got)
    if temperature > 0:
        other = generation.sample(student, tokens, prompts, 3, 5.0, seed=9)
        assert not np.array_equal(other, got)


def log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def kl(teacher_logits, student_logits):
    log_p, log_q = log_softmax(teacher_logits), log_softmax(student_logits)
    return (np.exp(log_p) * (log_p - log_q)).sum(-1)


def on_policy_distiller(models, generation_, alpha=0.0):
    teacher, student = models
    student = keras.models.clone_model(student)
    student.set_weights(models[1].get_weights())
    distiller = keras_distill.Distiller(
        teacher,
        student,
        losses.LogitsDistillation(1.0, reduction="mean_with_sample_weight"),
        student_loss_weight=alpha,
        generation=generation_,
    )
    distiller.compile(
        keras.optimizers.SGD(0.0),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return distiller


def test_the_loss_covers_exactly_the_generated_positions(models):
    teacher, student = models
    on_policy = generation.OnPolicy(
        fraction=0.5, prompt_length=(2, 4), new_tokens=3, temperature=1.5,
        seed=5,
    )
    distiller = on_policy_distiller(models, on_policy)
    tokens, labels = data()
    logs = distiller.fit(
        tokens, labels, batch_size=4, epochs=1, verbose=0, shuffle=False
    ).history
    # The step's seed: [seed, 0], the optimizer's step 0 and replica 0
    # folded in; the prompts from index 0, the tokens from 1, 2, ...
    seed = fold([5, 0], 0, 0)
    prompts = tf.random.stateless_uniform(
        [2], fold(seed, 0), 2, 5, dtype="int32"
    ).numpy()
    head = numpy_continue(student, tokens[:2], prompts, 3, 1.5, seed)
    assert not np.array_equal(head, tokens[:2])
    batch = np.concatenate([head, tokens[2:]])
    t = np.asarray(teacher(batch), np.float64)
    s = np.asarray(student(batch), np.float64)
    weight = np.ones((4, WINDOW))
    positions = np.arange(WINDOW)[None]
    weight[:2] = (positions >= prompts[:, None] - 1) & (
        positions < prompts[:, None] + 2
    )
    assert weight[:2].sum() == 6  # three generated tokens a row
    expected = (kl(t, s) * weight).sum() / weight.sum()
    np.testing.assert_allclose(
        logs["distillation_loss"][0], expected, rtol=1e-5
    )
    # With a top-k teacher (k = 3 of 7 tokens and the rest mass), the
    # same positions, each compared over the k + 1 buckets.
    top = on_policy_distiller(
        models, generation.OnPolicy(**{**on_policy.get_config(),
                                       "teacher_top_k": 3})
    ).fit(tokens, labels, batch_size=4, epochs=1, verbose=0, shuffle=False)
    order = np.argsort(-t, axis=-1)[..., :3]

    def buckets(logits):
        probs = np.exp(log_softmax(logits))
        picked = np.take_along_axis(probs, order, -1)
        return np.concatenate([picked, 1 - picked.sum(-1, keepdims=True)], -1)

    p, q = buckets(t), buckets(s)
    top_kl = (p * (np.log(p) - np.log(q))).sum(-1)
    np.testing.assert_allclose(
        top.history["distillation_loss"][0],
        (top_kl * weight).sum() / weight.sum(),
        rtol=1e-5,
    )
    # The prompt, and the junk after the generated tokens, are inert:
    # other tokens there give the same batch loss (the causal models
    # never read them for a covered position).
    junk = tokens.copy()
    junk[:2, 7] = (junk[:2, 7] + 1) % VOCABULARY
    again = on_policy_distiller(models, on_policy).fit(
        junk, labels, batch_size=4, epochs=1, verbose=0, shuffle=False
    ).history
    np.testing.assert_allclose(
        again["distillation_loss"][0], logs["distillation_loss"][0],
        rtol=1e-6,
    )


def test_keep_data_adds_the_continued_rows_to_the_whole_batch(models):
    teacher, student = models
    on_policy = generation.OnPolicy(
        fraction=0.5, prompt_length=3, new_tokens=2, temperature=1.0,
        seed=2, keep_data=True,
    )
    tokens, labels = data()
    logs = on_policy_distiller(models, on_policy, alpha=0.5).fit(
        tokens, labels, batch_size=4, epochs=1, verbose=0, shuffle=False
    ).history
    seed = fold([2, 0], 0, 0)
    head = numpy_continue(student, tokens[:2], np.full(2, 3), 2, 1.0, seed)
    # Six rows: the two continued copies, then all four data rows.
    batch = np.concatenate([head, tokens])
    t = np.asarray(teacher(batch), np.float64)
    s = np.asarray(student(batch), np.float64)
    weight = np.ones((6, WINDOW))
    weight[:2] = 0.0
    weight[:2, 2:4] = 1.0  # the logits that predict tokens 3 and 4
    np.testing.assert_allclose(
        logs["distillation_loss"][0],
        (kl(t, s) * weight).sum() / weight.sum(),
        rtol=1e-5,
    )
    # The supervised loss: the data rows with their own labels, the
    # copies weighing 0 (Keras' mean over every position of six rows).
    picked = np.take_along_axis(
        log_softmax(s[2:]), labels[..., None], -1
    )[..., 0]
    np.testing.assert_allclose(
        logs["student_loss"][0], -picked.sum() / (6 * WINDOW), rtol=1e-5
    )


def test_sequence_level_trains_on_the_teachers_greedy_tokens(models):
    teacher, student = models
    distiller = on_policy_distiller(
        models, generation.SequenceLevel(prompt_length=3, new_tokens=4), 0.5
    )
    tokens, labels = data()
    logs = distiller.fit(
        tokens, labels, batch_size=4, epochs=1, verbose=0
    ).history
    prompts = np.full(4, 3, "int32")
    batch = numpy_continue(teacher, tokens, prompts, 4, 0.0, [0, 0])
    t = np.asarray(teacher(batch), np.float64)
    s = np.asarray(student(batch), np.float64)
    covered = np.zeros((4, WINDOW))
    covered[:, 2:6] = 1.0  # the logits that predict tokens 3..6
    np.testing.assert_allclose(
        logs["distillation_loss"][0],
        (kl(t, s) * covered).sum() / covered.sum(),
        rtol=1e-5,
    )
    # The supervised loss: the teacher's tokens as labels, on the
    # covered positions only (Keras' mean over all positions).
    following = batch[:, 1:]
    picked = np.take_along_axis(
        log_softmax(s[:, :-1]), following[..., None], -1
    )[..., 0]
    expected = -(picked * covered[:, :-1]).sum() / covered.size
    np.testing.assert_allclose(
        logs["student_loss"][0], expected, rtol=1e-5
    )


def test_fraction_zero_is_the_plain_step_exactly(models):
    tokens, labels = data(16)
    weights = []
    for generation_ in (None, generation.OnPolicy(fraction=0.0)):
        distiller = on_policy_distiller(models, generation_, alpha=0.3)
        distiller.compile(
            keras.optimizers.Adam(0.01),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        distiller.fit(tokens, labels, batch_size=8, epochs=2, verbose=0)
        weights.append(distiller.student.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


def test_config_round_trip_and_errors(models):
    teacher, student = models
    on_policy = generation.OnPolicy(0.25, (2, 5), 3, 0.8, seed=7)
    distiller = keras_distill.Distiller(
        teacher, student, generation=on_policy
    )
    copy = keras_distill.Distiller.from_config(distiller.get_config())
    assert isinstance(copy.generation, generation.OnPolicy)
    assert copy.generation.get_config() == {
        "fraction": 0.25,
        "prompt_length": [2, 5],
        "new_tokens": 3,
        "temperature": 0.8,
        "seed": 7,
        "teacher_top_k": None,
        "keep_data": False,
    }
    assert generation.SequenceLevel(teacher_top_k=4).teacher_top_k == 4
    assert generation.SequenceLevel.from_config(
        generation.SequenceLevel(keep_data=True).get_config()
    ).keep_data
    with pytest.raises(ValueError, match="Expected a bool. Received: "
                       "keep_data=1"):
        generation.OnPolicy(keep_data=1)
    with pytest.raises(ValueError, match="teacher_top_k"):
        generation.OnPolicy(teacher_top_k=0)
    squared = keras_distill.Distiller(
        teacher, student, losses.LogitsDistillation(1.0, loss="mse"),
        student_loss_weight=0.0,
        generation=generation.OnPolicy(1.0, 2, 2, teacher_top_k=3),
    )
    squared.compile("sgd")
    with pytest.raises(ValueError, match=r"top-k logits.*LogitsDistillation"):
        squared.fit(*data(), epochs=1, verbose=0)
    level = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(generation.SequenceLevel())
    )
    assert level.generator == "teacher" and level.temperature == 0.0
    with pytest.raises(ValueError, match="Expected low <= high"):
        generation.OnPolicy(prompt_length=(5, 2))
    with pytest.raises(ValueError, match="`fraction`"):
        generation.OnPolicy(fraction=1.5)
    with pytest.raises(ValueError, match="Expected None, a"):
        keras_distill.Distiller(teacher, student, generation="on-policy")
    with pytest.raises(ValueError, match="not both"):
        keras_distill.Distiller(
            teacher, student, augment=[keras.layers.Identity()],
            generation=on_policy,
        )
    tokens, labels = data()
    too_long = on_policy_distiller(
        models, generation.OnPolicy(prompt_length=6, new_tokens=3)
    )
    with pytest.raises(ValueError, match="a window of at least 9 tokens"):
        too_long.fit(tokens, labels, verbose=0)
    cache = keras_distill.teachers.TeacherCache(teacher, tokens, verbose=0)
    cached = on_policy_distiller(models, on_policy)
    with pytest.raises(ValueError, match="Expected the teacher online"):
        cached.fit(cache.dataset(tokens, labels, batch_size=4), verbose=0)
    with pytest.raises(ValueError, match="token ids of shape"):
        generation.sample(student, tokens.astype("float32"), 2, 3)


def test_small_batches_short_rows_and_other_inputs(models):
    _, student = models
    tokens, labels = data()
    mask = np.ones_like(tokens, bool)
    mask[0, 2:] = False  # row 0: two valid tokens
    extra = np.arange(4, dtype="float32")[:, None] * np.ones((1, 3))
    seen = []

    def logits(inputs):  # every input sliced to the generated rows
        seen.append(tuple(inputs["extra"].shape))
        return student(inputs["token_ids"])

    on_policy = generation.OnPolicy(0.3, prompt_length=4, new_tokens=2)
    x = {"token_ids": tf.constant(tokens), "padding_mask": tf.constant(mask),
         "extra": tf.constant(extra)}
    seed = tf.constant([0, 0], "int64")
    new_x, new_y, _, weight = on_policy.batch(
        logits, x, tf.constant(labels), None, seed
    )
    assert seen and set(seen) == {(2, 3)}  # ceil(0.3 * 4) = 2 rows
    new_tokens, new_mask = new_x["token_ids"].numpy(), new_x["padding_mask"]
    # Row 0's prompt ends at its last valid token: tokens 2, 3 are new.
    np.testing.assert_array_equal(
        new_mask.numpy()[0], [1, 1, 1, 1, 0, 0, 0, 0]
    )
    np.testing.assert_array_equal(weight.numpy()[0], [0, 1, 1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(weight.numpy()[1], [0, 0, 0, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(new_tokens[2:], tokens[2:])
    # keep_data: the copies first, then every data row, other inputs too.
    kept = generation.OnPolicy(0.3, 4, 2, keep_data=True)
    kept_x, kept_y, _, kept_w = kept.batch(
        logits, x, tf.constant(labels), None, seed
    )
    np.testing.assert_array_equal(kept_x["token_ids"][:2], new_tokens[:2])
    np.testing.assert_array_equal(kept_x["token_ids"][2:], tokens)
    np.testing.assert_array_equal(kept_x["padding_mask"][2:], mask)
    np.testing.assert_array_equal(kept_x["extra"], extra[[0, 1, 0, 1, 2, 3]])
    np.testing.assert_array_equal(kept_x["padding_mask"][:2], new_mask[:2])
    np.testing.assert_array_equal(kept_y[:2], new_y[:2])
    np.testing.assert_array_equal(kept_y[2:], labels)
    np.testing.assert_array_equal(kept_w[:2], weight[:2])
    np.testing.assert_array_equal(kept_w[2:], np.ones((4, WINDOW)))
    # One row of one: a fraction above 0 still generates.
    one, _, _, w = on_policy.batch(
        lambda t: student(t), tf.constant(tokens[:1]), None, None, seed
    )
    assert w.numpy().sum() == 2


class _Unweighted(losses.DistillationLoss):
    def compute(self, teacher_outputs, student_outputs, y_true=None):
        return keras.ops.mean(keras.ops.square(teacher_outputs))


def test_a_loss_without_sample_weights_is_refused(models):
    teacher, student = models
    tokens, labels = data()
    distiller = keras_distill.Distiller(
        teacher, student, _Unweighted(), student_loss_weight=0.0,
        generation=generation.OnPolicy(1.0, 2, 2),
    )
    distiller.compile("sgd")
    with pytest.raises(ValueError, match=r"take sample weights.*_Unweighted"):
        distiller.fit(tokens, labels, verbose=0)
