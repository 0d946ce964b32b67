"""TFLite export of the students people train: token inputs, dict inputs,
several outputs, mixed precision; each as float32 and int8, compared with
Keras in the LiteRT interpreter."""

import os

import keras
import numpy as np
import pytest

from keras_distill import export

pytestmark = pytest.mark.integration

RNG = np.random.default_rng(0)


def token_model():
    inputs = keras.Input((6,), dtype="int32", name="tokens")
    h = keras.layers.Embedding(20, 8)(inputs)
    h = keras.layers.GlobalAveragePooling1D()(h)
    return keras.Model(inputs, keras.layers.Dense(3)(h), name="tokens")


def dict_model():
    image = keras.Input((4, 4, 1), name="image")
    meta = keras.Input((3,), name="meta")
    h = keras.layers.Concatenate()([keras.layers.Flatten()(image), meta])
    h = keras.layers.Dense(8, activation="relu")(h)
    return keras.Model(
        {"image": image, "meta": meta}, keras.layers.Dense(3)(h), name="d"
    )


def two_head_model():
    inputs = keras.Input((6,))
    h = keras.layers.Dense(8, activation="relu")(inputs)
    return keras.Model(
        inputs,
        [keras.layers.Dense(3, name="cls")(h), keras.layers.Dense(1)(h)],
        name="two_heads",
    )


def mlp():
    inputs = keras.Input((6,))
    h = keras.layers.Dense(16, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3)(h), name="mlp")


CASES = {
    "tokens": (token_model, lambda: RNG.integers(0, 20, (48, 6))),
    "dict": (
        dict_model,
        lambda: {
            "image": RNG.random((48, 4, 4, 1)).astype("float32"),
            "meta": RNG.random((48, 3)).astype("float32"),
        },
    ),
    "two_outputs": (
        two_head_model,
        lambda: RNG.normal(size=(48, 6)).astype("float32"),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("quantize", [None, "int8"])
def test_export_of_models_users_train(case, quantize, tmp_path):
    build, inputs = CASES[case]
    model, x = build(), inputs()
    path = tmp_path / f"{case}.tflite"
    report = export.tflite(
        model,
        path,
        quantize=quantize,
        representative_data=x,
        latency_runs=2,
    )
    assert path.exists() and report.compared == 48
    print(case, quantize, report.max_abs_diff, report.argmax_agreement)
    if quantize is None:
        assert report.max_abs_diff < 1e-4
        assert report.argmax_agreement == 1.0
    else:
        assert report.max_abs_diff < 0.5
        assert report.argmax_agreement >= 0.75
    # The runner gives every output, each like Keras'.
    runner = export.Runner(path)
    outputs = runner.predict_outputs(
        x if not isinstance(x, dict) else {k: v for k, v in x.items()}
    )
    expected = model(x)
    expected = expected if isinstance(expected, list) else [expected]
    assert len(outputs) == len(expected)
    for got, want in zip(outputs, expected):
        assert got.shape == tuple(want.shape)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_export_of_mixed_precision_students(policy, tmp_path):
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = mlp()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.layers[-1].compute_dtype != "float32"
    x = RNG.normal(size=(48, 6)).astype("float32")
    mixed = np.asarray(model(x), "float32")
    for quantize in (None, "int8"):
        path = tmp_path / f"{policy}_{quantize}.tflite"
        report = export.tflite(
            model,
            path,
            quantize=quantize,
            representative_data=x,
            latency_runs=2,
        )
        print(policy, quantize, report.max_abs_diff, report.argmax_agreement)
        exported = export.Runner(path).predict(x)
        tolerance = 0.05 if quantize is None else 0.5
        assert np.abs(exported - mixed).max() < tolerance
        if quantize is None:
            assert report.max_abs_diff < 1e-4  # against the float32 twin
    # The student itself is left as it was.
    assert model.layers[-1].compute_dtype != "float32"


def test_a_failed_check_leaves_no_file(tmp_path, monkeypatch):
    model = mlp()
    x = RNG.normal(size=(8, 6)).astype("float32")
    target = tmp_path / "m.tflite"
    target.write_bytes(b"previous")

    def fail(self, inputs):
        raise RuntimeError("interpreter failed")

    monkeypatch.setattr(export.Runner, "predict_outputs", fail)
    with pytest.raises(RuntimeError, match="interpreter failed"):
        export.tflite(model, target, check_data=x, latency_runs=1)
    assert target.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["m.tflite"]
    with pytest.raises(RuntimeError, match="interpreter failed"):
        export.tflite(model, tmp_path / "new.tflite", check_data=x)
    assert not (tmp_path / "new.tflite").exists()


def test_token_model_saved_model(tmp_path):
    model = token_model()
    x = RNG.integers(0, 20, (16, 6))
    report = export.saved_model(model, tmp_path / "sm", check_data=x)
    assert report.max_abs_diff < 1e-5
    report = export.saved_model(dict_model(), tmp_path / "dict_sm")
    assert report.max_abs_diff < 1e-5


def test_a_dataset_name_as_data_is_refused_with_the_way_to_load_it(tmp_path):
    model = token_model()
    target = tmp_path / "m.tflite"
    with pytest.raises(TypeError, match=r"Received: the string 'mnist5k'"):
        export.tflite(
            model,
            target,
            quantize="int8",
            representative_data="mnist5k",
            latency_runs=1,
        )
    with pytest.raises(TypeError, match=r"load_arrays\(name\)"):
        export.saved_model(model, tmp_path / "sm", check_data="digits")
    assert not target.exists() and not (tmp_path / "sm").exists()


def causal_lm(vocabulary=13, window=6):
    tokens = keras.Input((window,), dtype="int32", name="tokens")
    h = keras.layers.Embedding(vocabulary, 8)(tokens)
    h = keras.layers.MultiHeadAttention(2, 4)(h, h, use_causal_mask=True)
    return keras.Model(tokens, keras.layers.Dense(vocabulary)(h), name="lm")


def np_greedy(model, prompt, steps, window):
    """Greedy decoding written out: pad, read the last prompt position."""
    tokens = list(prompt)
    for _ in range(steps):
        context = tokens[-window:]
        ids = np.zeros((1, window), "int32")
        ids[0, : len(context)] = context
        logits = np.asarray(model(ids))
        tokens.append(int(logits[0, len(context) - 1].argmax()))
    return tokens


def test_generate_greedily_in_keras_and_in_litert(tmp_path):
    keras.utils.set_random_seed(0)
    model = causal_lm()
    prompt = [3, 7, 1]
    expected = np_greedy(model, prompt, 9, window=6)  # slides past 6
    assert export.generate(model, prompt, 9) == expected
    path = tmp_path / "lm.tflite"
    report = export.tflite(
        model, path, check_data=RNG.integers(0, 13, (8, 6)), latency_runs=1
    )
    assert report.argmax_agreement == 1.0
    assert export.generate(str(path), prompt, 9) == expected
    assert export.generate(model, prompt, 0) == prompt
    with pytest.raises(ValueError, match="at least one token"):
        export.generate(model, [], 3)
    with pytest.raises(ValueError, match="Expected an integer >= 0"):
        export.generate(model, prompt, -1)
