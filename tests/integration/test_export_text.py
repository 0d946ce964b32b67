"""Text students on the device: a model that reads strings through a
`TextVectorization` is exported from its token ids with its vocabulary
beside the file (other string models are refused before converting), and
KerasHub tasks export in every quantization mode, checked on their valid
positions, and decode with `generate` in Keras and LiteRT alike."""

import re
import string

import keras
import numpy as np
import pytest

from keras_distill import export

pytestmark = pytest.mark.integration

WORDS = "the cat sat on mat a dog ran good bad movie film great".split()
TEXTS = np.array(
    [
        "The cat sat on the mat.",
        "a GOOD movie",
        "bad film, bad dog",
        "great",
        "the dog ran after a cat on a mat again and again",
        "unknown words only",
    ]
    * 3,
    dtype=object,
)


def string_student(length=8, mask_zero=False):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((), dtype="string", name="text")
    h = keras.layers.TextVectorization(
        output_sequence_length=length, vocabulary=WORDS, name="vectorizer"
    )(inputs)
    h = keras.layers.Embedding(len(WORDS) + 2, 8, mask_zero=mask_zero)(h)
    h = keras.layers.GlobalAveragePooling1D()(h)
    return keras.Model(inputs, keras.layers.Dense(3)(h), name="text_student")


def tokenize_as_documented(texts, vocabulary, length):
    """The tokenization docs/models.md describes, written from it: lower
    case, ASCII punctuation removed, split on whitespace, each word's line
    in the vocabulary file (1, `[UNK]`, when absent), cut or padded with 0
    to the length."""
    ids = {token: i for i, token in enumerate(vocabulary)}
    rows = []
    for text in texts:
        text = re.sub(f"[{re.escape(string.punctuation)}]", "", text.lower())
        row = [ids.get(word, 1) for word in text.split()][:length]
        rows.append(row + [0] * (length - len(row)))
    return np.asarray(rows, np.int32)


@pytest.mark.parametrize(
    "quantize, mask_zero", [(None, False), ("dynamic", True), ("int8", True)]
)
def test_a_string_student_exports_from_token_ids(quantize, mask_zero, tmp_path):
    model = string_student(mask_zero=mask_zero)
    path = str(tmp_path / "student.tflite")
    labels = np.arange(len(TEXTS)) % 3
    report = export.tflite(
        model,
        path,
        quantize=quantize,
        representative_data=TEXTS,
        check_data=(TEXTS, labels),
        latency_runs=3,
    )
    assert report.compared == len(TEXTS) and report.argmax_agreement == 1.0
    assert report.max_abs_diff < (1e-5 if quantize is None else 0.05)
    assert report.vocabulary_path == str(tmp_path / "student.vocabulary.txt")
    with open(report.vocabulary_path) as f:
        vocabulary = f.read().split("\n")[:-1]
    assert vocabulary == ["", "[UNK]", *WORDS]
    # An app tokenizes as documented and feeds the file's token_ids.
    ids = tokenize_as_documented(TEXTS, vocabulary, 8)
    runner = export.Runner(path)
    assert runner.input_names == ["token_ids"]
    expected = keras.ops.convert_to_numpy(model(keras.ops.array(TEXTS)))
    np.testing.assert_allclose(
        runner.predict(ids), expected, atol=1e-5 if quantize is None else 0.05
    )


def test_string_models_that_cannot_run_on_a_phone_are_refused(tmp_path):
    inputs = keras.Input((), dtype="string", name="text")
    h = keras.layers.TextVectorization(vocabulary=WORDS)(inputs)  # any length
    h = keras.layers.Embedding(len(WORDS) + 2, 8)(h)
    h = keras.layers.GlobalAveragePooling1D()(h)
    ragged = keras.Model(inputs, keras.layers.Dense(3)(h))
    path = tmp_path / "student.tflite"
    with pytest.raises(ValueError, match=r"takes strings \(input 'text'") as e:
        export.tflite(ragged, path, check_data=TEXTS)
    assert "output_sequence_length=None" in str(e.value)
    lookup = keras.layers.StringLookup(vocabulary=WORDS)
    inputs = keras.Input((4,), dtype="string", name="words")
    h = keras.layers.Embedding(len(WORDS) + 1, 8)(lookup(inputs))
    h = keras.layers.GlobalAveragePooling1D()(h)
    words = keras.Model(inputs, keras.layers.Dense(3)(h))
    with pytest.raises(ValueError, match="no TextVectorization layer reads"):
        export.tflite(words, path)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_string_student_saved_model_keeps_its_vocabulary(tmp_path):
    report = export.saved_model(
        string_student(), tmp_path / "saved", check_data=TEXTS
    )
    assert report.max_abs_diff < 1e-5
    with open(report.vocabulary_path) as f:
        assert f.read().split("\n")[2:-1] == WORDS


def hub():
    return pytest.importorskip(
        "keras_hub", reason="KerasHub is the optional `hub` extra"
    )


def hub_causal_lm():
    hub()
    from test_hub import TEXTS as LM_TEXTS
    from test_hub import causal_lm

    return causal_lm(1, 16, 1), LM_TEXTS


@pytest.mark.parametrize("quantize", [None, "float16", "dynamic", "int8"])
def test_a_kerashub_causal_lm_exports_in_every_mode(quantize, tmp_path):
    lm, texts = hub_causal_lm()
    path = str(tmp_path / "lm.tflite")
    report = export.tflite(
        lm,
        path,
        quantize=quantize,
        representative_data=texts,
        check_data=texts,
        latency_runs=3,
    )
    runner = export.Runner(path)
    assert runner.input_names == ["padding_mask", "token_ids"]
    # Valid positions only: the padding mask's ones.
    x, _, _ = lm.preprocessor(keras.ops.array(texts))
    valid = int(np.asarray(x["padding_mask"]).sum())
    assert report.compared == len(texts) and valid < len(texts) * 16
    tolerance = {None: 1e-4, "float16": 1e-2}.get(quantize, 0.1)
    assert report.max_abs_diff < tolerance
    assert report.argmax_agreement >= (1.0 if quantize is None else 0.9)
    if quantize is None:
        prompt = [10, 20, 30]
        keras_tokens = export.generate(lm, prompt, 6)
        assert keras_tokens == export.generate(path, prompt, 6)
        assert keras_tokens == export.generate(runner, prompt, 6)
        # By hand: the argmax at the prompt's last valid position.
        ids = np.zeros((1, 16), "int32")
        ids[0, :3] = prompt
        mask = (ids > 0).astype("int32")
        logits = lm({"token_ids": ids, "padding_mask": mask})
        assert keras_tokens[3] == int(np.argmax(logits[0, 2]))


def test_a_kerashub_classifier_student_exports(tmp_path):
    hub()
    from test_hub import bert_classifier

    classifier = bert_classifier()
    report = export.tflite(
        classifier,
        tmp_path / "classifier.tflite",
        check_data=TEXTS,
        sequence_length=10,  # chosen, not the preprocessor's 12
        latency_runs=3,
    )
    assert report.argmax_agreement == 1.0 and report.max_abs_diff < 1e-4
    runner = export.Runner(tmp_path / "classifier.tflite")
    shapes = {k: tuple(v["shape"]) for k, v in runner._inputs.items()}
    assert shapes == {
        "padding_mask": (1, 10),
        "segment_ids": (1, 10),
        "token_ids": (1, 10),
    }
