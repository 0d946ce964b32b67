"""KerasHub models in a Distiller: causal LMs distilled token by token from
token ids or raw strings (through the student's preprocessor), saved and
continued in a fresh process; a text classifier with its preprocessor
teaching a plain Keras student. Tiny random models built from configs
(nothing is downloaded)."""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import np_log_softmax

import keras_distill
from keras_distill import losses

keras_hub = pytest.importorskip(
    "keras_hub", reason="KerasHub is the optional `hub` extra"
)

SEQUENCE = 16
TEXTS = [
    "the cat sat on the mat",
    "a dog ran after the cat",
    "hello world, hello keras",
    "distil the teacher into the student",
    "short",
    "tokens by the byte",
] * 2


def byte_vocabulary():
    """A byte-level GPT-2 vocabulary: each byte a token (printable bytes
    keep their character, the others move past 255, as GPT-2 maps them),
    two merges and the end-of-text token."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    vocabulary, moved = {}, 0
    for byte in range(256):
        if byte in printable:
            vocabulary[chr(byte)] = byte
        else:
            vocabulary[chr(256 + moved)] = byte
            moved += 1
    vocabulary.update({"th": 256, "he": 257, "<|endoftext|>": 258})
    return vocabulary


def preprocessor():
    tokenizer = keras_hub.models.GPT2Tokenizer(
        vocabulary=byte_vocabulary(), merges=["t h", "h e"]
    )
    return keras_hub.models.GPT2CausalLMPreprocessor(
        tokenizer, sequence_length=SEQUENCE
    )


def causal_lm(layers, dim, seed):
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=259,
        num_layers=layers,
        num_heads=2,
        hidden_dim=dim,
        intermediate_dim=2 * dim,
        max_sequence_length=SEQUENCE,
        dropout=0.0,  # training steps that replay exactly
    )
    return keras_hub.models.GPT2CausalLM(
        backbone=backbone, preprocessor=preprocessor()
    )


def test_tokenizers_that_differ_are_named_at_construction(lms):
    teacher, _ = lms
    swapped = byte_vocabulary()
    swapped["th"], swapped["he"] = 257, 256  # same size, two ids swapped
    tokenizer = keras_hub.models.GPT2Tokenizer(
        vocabulary=swapped, merges=["t h", "h e"]
    )
    keras.utils.set_random_seed(1)
    student = keras_hub.models.GPT2CausalLM(
        backbone=causal_lm(1, 16, seed=1).backbone,
        preprocessor=keras_hub.models.GPT2CausalLMPreprocessor(
            tokenizer, sequence_length=SEQUENCE
        ),
    )
    with pytest.raises(ValueError) as error:
        lm_distiller(teacher, student)
    message = str(error.value)
    assert "Expected the same tokenizer" in message
    assert "token id 256 is 'th' for the teacher and 'he' for the student" in (
        message
    )
    assert "259 and 259 tokens" in message


def lm_distiller(teacher, student):
    distiller = keras_distill.Distiller(
        teacher,
        student,
        losses.LogitsDistillation(1.0, reduction="mean_with_sample_weight"),
        student_loss_weight=0.5,
    )
    distiller.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        evaluate_distillation=True,
    )
    return distiller


def token_batches(batch_size=6):
    x, y, weight = preprocessor()(tf.constant(TEXTS))
    data = tf.data.Dataset.from_tensor_slices((x, y, weight))
    return data.batch(batch_size), (x, y, weight)


@pytest.fixture(scope="module")
def lms():
    return causal_lm(2, 32, seed=0), causal_lm(1, 16, seed=1)


def test_a_causal_lm_distils_per_valid_token(lms):
    teacher, student = lms
    distiller = lm_distiller(teacher, student)
    _, (x, y, weight) = token_batches()
    logs = distiller.evaluate(
        x,
        y,
        sample_weight=weight,
        batch_size=len(TEXTS),
        verbose=0,
        return_dict=True,
    )
    t = np.asarray(teacher(x), np.float64)
    s = np.asarray(student(x), np.float64)
    log_p, log_q = np_log_softmax(t), np_log_softmax(s)
    kl = (np.exp(log_p) * (log_p - log_q)).sum(-1)
    w = np.asarray(weight, np.float64)
    expected = (kl * w).sum() / w.sum()  # per valid (next) token
    np.testing.assert_allclose(logs["distillation_loss"], expected, rtol=1e-4)
    # The labels are the next tokens already: nothing is shifted again.
    np.testing.assert_array_equal(
        np.asarray(y)[:, :-1], np.asarray(x["token_ids"])[:, 1:]
    )


def test_a_causal_lm_student_distils_on_policy(lms):
    teacher, student = lms
    distiller = keras_distill.Distiller(
        teacher,
        student,
        losses.LogitsDistillation(1.0, reduction="mean_with_sample_weight"),
        student_loss_weight=0.0,
        generation=keras_distill.on_policy.OnPolicy(
            1.0, prompt_length=3, new_tokens=4, seed=2
        ),
    )
    distiller.compile(keras.optimizers.SGD(0.0))  # the fixture unchanged
    _, (x, y, weight) = token_batches()
    logs = distiller.fit(
        x, y, sample_weight=weight, batch_size=len(TEXTS), verbose=0
    ).history
    # The step's seed: [2, 0] with step 0 and replica 0 folded in.
    seed = tf.constant([2, 0], "int64")
    for value in (0, 0):
        value = tf.constant(value, "int64")
        seed = tf.random.experimental.stateless_fold_in(seed, value)
    continued = keras_distill.on_policy.sample(
        student, x, 3, 4, temperature=1.0, seed=seed.numpy()
    )
    # The padding mask: the prompt's valid tokens, then the new ones.
    original = np.asarray(x["padding_mask"])
    expected_mask = original.copy()
    expected_mask[:, 3:] = False
    expected_mask[:, 3:7] = True
    np.testing.assert_array_equal(continued["padding_mask"], expected_mask)
    t = np.asarray(teacher(continued), np.float64)
    s = np.asarray(student(continued), np.float64)
    log_p, log_q = np_log_softmax(t), np_log_softmax(s)
    kl = (np.exp(log_p) * (log_p - log_q)).sum(-1)
    expected = kl[:, 2:6].mean()  # the logits that predict tokens 3..6
    # Close models: a KL near 0.0025, float32's rounding near 1e-7 a term.
    np.testing.assert_allclose(
        logs["distillation_loss"][0], expected, rtol=1e-4, atol=1e-6
    )
    shifted = kl[:, 3:7].mean()  # one position off: far outside that
    assert abs(shifted - expected) > 1e-5


def test_raw_strings_go_through_the_students_preprocessor(lms):
    teacher, student = lms
    distiller = lm_distiller(teacher, student)
    tokens, _ = token_batches()
    from_ids = distiller.evaluate(tokens, verbose=0, return_dict=True)
    raw = tf.data.Dataset.from_tensor_slices(TEXTS).batch(6)
    from_text = distiller.evaluate(raw, verbose=0, return_dict=True)
    listed = distiller.evaluate(
        TEXTS, batch_size=6, verbose=0, return_dict=True
    )
    for logs in (from_text, listed):
        for key in ("loss", "student_loss", "distillation_loss"):
            np.testing.assert_allclose(logs[key], from_ids[key], rtol=1e-6)
    before = from_ids["loss"]
    distiller.fit(raw, epochs=2, verbose=0)
    assert distiller.evaluate(raw, verbose=0, return_dict=True)["loss"] < before


CONTINUE = """
import sys
import numpy as np
import keras
import keras_hub  # noqa: F401
import keras_distill  # noqa: F401
import tensorflow as tf

folder = sys.argv[1]
arrays = np.load(folder + "/tokens.npz")
x = {"token_ids": arrays["token_ids"], "padding_mask": arrays["padding_mask"]}
data = tf.data.Dataset.from_tensor_slices(
    (x, arrays["y"], arrays["weight"])
).batch(6)
distiller = keras.models.load_model(folder + "/distiller.keras")
distiller.fit(data, epochs=1, verbose=0, shuffle=False)
np.savez(folder + "/after.npz", *distiller.student.get_weights())
"""


@pytest.mark.integration
def test_a_distilled_lm_reloads_in_a_fresh_process_and_continues(tmp_path):
    distiller = lm_distiller(causal_lm(2, 32, 0), causal_lm(1, 16, 1))
    data, (x, y, weight) = token_batches()
    distiller.fit(data, epochs=1, verbose=0, shuffle=False)
    distiller.save(tmp_path / "distiller.keras")
    np.savez(
        tmp_path / "tokens.npz",
        token_ids=np.asarray(x["token_ids"]),
        padding_mask=np.asarray(x["padding_mask"]),
        y=np.asarray(y),
        weight=np.asarray(weight),
    )
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CONTINUE), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    distiller.fit(data, epochs=1, verbose=0, shuffle=False)
    with np.load(tmp_path / "after.npz") as after:
        fresh = [after[f"arr_{i}"] for i in range(len(after.files))]
    for a, b in zip(distiller.student.get_weights(), fresh):
        np.testing.assert_allclose(a, b, atol=1e-5)


WORDS = "the cat sat on mat a dog ran good bad movie film great".split()
CLASSIFIER_TEXTS = np.array(
    ["the cat sat on the mat", "a good movie", "bad film", "great"] * 3,
    dtype=object,
)


def bert_classifier(vocabulary_file=None):
    """A tiny BERT text classifier (3 classes, logits) with its
    preprocessor; its vocabulary written to `vocabulary_file` if given."""
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    if vocabulary_file is not None:
        with open(vocabulary_file, "w") as f:
            f.write("\n".join(vocabulary) + "\n")
    tokenizer = keras_hub.models.BertTokenizer(
        vocabulary=str(vocabulary_file) if vocabulary_file else vocabulary
    )
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(vocabulary),
        num_layers=1,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=12,
    )
    return keras_hub.models.BertTextClassifier(
        backbone,
        num_classes=3,
        activation=None,
        preprocessor=keras_hub.models.BertTextClassifierPreprocessor(
            tokenizer, sequence_length=12
        ),
    )


def text_classifier_distiller(vocabulary_file=None):
    """A tiny BERT classifier teaching a `TextVectorization` student, the
    teacher's own preprocessor as its `teacher_preprocessing`."""
    teacher = bert_classifier(vocabulary_file)
    # The student reads the strings itself; only the teacher is given the
    # teacher's preprocessor.
    inputs = keras.Input((), dtype="string")
    h = keras.layers.TextVectorization(
        output_sequence_length=8, vocabulary=WORDS
    )(inputs)
    h = keras.layers.Embedding(len(WORDS) + 2, 8)(h)
    h = keras.layers.GlobalAveragePooling1D()(h)
    student = keras.Model(inputs, keras.layers.Dense(3)(h))
    distiller = keras_distill.Distiller(
        teacher,
        student,
        losses.LogitsDistillation(2.0),
        teacher_preprocessing=teacher.preprocessor,
    )
    distiller.compile(
        "adam",
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        evaluate_distillation=True,
    )
    return distiller


def test_a_text_classifier_teaches_a_plain_keras_student():
    distiller = text_classifier_distiller()
    teacher, student = distiller.teacher, distiller.student
    texts = CLASSIFIER_TEXTS
    labels = np.arange(len(texts)) % 3
    distiller.fit(texts, labels, batch_size=4, epochs=1, verbose=0)
    logs = distiller.evaluate(
        texts, labels, batch_size=len(texts), verbose=0, return_dict=True
    )
    t = np.asarray(teacher.predict(texts, verbose=0), np.float64) / 2.0
    s = np.asarray(student.predict(texts, verbose=0), np.float64) / 2.0
    log_p, log_q = np_log_softmax(t), np_log_softmax(s)
    expected = 4.0 * (np.exp(log_p) * (log_p - log_q)).sum(-1).mean()
    np.testing.assert_allclose(logs["distillation_loss"], expected, rtol=1e-4)


RELOAD = """
import sys
import numpy as np
import keras
import keras_distill

folder = sys.argv[1]
texts = np.array(
    ["the cat sat on the mat", "a good movie", "bad film", "great"] * 3,
    dtype=object,
)
distiller = keras.models.load_model(folder + "/distiller.keras")
assert distiller.teacher_preprocessing is distiller.teacher.preprocessor
np.savez(
    folder + "/reloaded.npz",
    student=distiller.predict(texts, verbose=0),
    teacher=distiller.teacher.predict(texts, verbose=0),
)
"""


@pytest.mark.integration
def test_a_teachers_own_preprocessor_saves_once_and_reloads(tmp_path):
    distiller = text_classifier_distiller(tmp_path / "vocabulary.txt")
    texts = CLASSIFIER_TEXTS
    distiller.fit(texts, np.arange(12) % 3, batch_size=4, epochs=1, verbose=0)
    config = distiller.get_config()
    assert config["teacher_preprocessing"] == {
        "teacher_attribute": "preprocessor"
    }
    distiller.save(tmp_path / "distiller.keras")
    (tmp_path / "vocabulary.txt").unlink()  # the assets travel in the file
    result = subprocess.run(
        [sys.executable, "-c", RELOAD, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with np.load(tmp_path / "reloaded.npz") as reloaded:
        np.testing.assert_allclose(
            reloaded["student"], distiller.predict(texts, verbose=0), atol=1e-6
        )
        np.testing.assert_allclose(
            reloaded["teacher"],
            distiller.teacher.predict(texts, verbose=0),
            atol=1e-6,
        )


def test_a_teachers_own_layer_as_preprocessing_is_referenced():
    inputs = keras.Input((6,))
    scale = keras.layers.Rescaling(0.5, name="scale")
    h = scale(inputs)
    teacher = keras.Model(inputs, keras.layers.Dense(3)(h), name="teacher")
    student = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(3)], name="student"
    )
    distiller = keras_distill.Distiller(
        teacher, student, teacher_preprocessing=scale
    )
    config = distiller.get_config()
    assert config["teacher_preprocessing"] == {"teacher_layer": "scale"}
    restored = keras_distill.Distiller.from_config(config)
    assert restored.teacher_preprocessing is restored.teacher.get_layer("scale")
