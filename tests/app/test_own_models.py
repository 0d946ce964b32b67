"""The command on the user's own models: a trained teacher file (used as
it is, never retrained or written), a factory `module:function`, a Keras
model config, a student file that starts from its weights, and a teacher
whose inputs differ from the student's."""

import hashlib
import json
import os

import keras
import numpy as np
import pytest

from keras_distill.app import cli
from keras_distill.app import datasets as data
from keras_distill.app.config import RunConfig
from keras_distill.app.config import model_kind

FAST = ["--epochs", "1", "--teacher-epochs", "1", "--verbose", "0"]


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def digits_model(name, hidden=16, shape=(8, 8, 1), seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input(shape),
            keras.layers.Flatten(),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dense(10),
        ],
        name=name,
    )


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    """A teacher trained by the user on the digits, saved as a file."""
    folder = tmp_path_factory.mktemp("user")
    arrays = data.load_arrays("digits")
    teacher = digits_model("user_teacher", 32)
    teacher.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    teacher.fit(arrays.x_train, arrays.y_train, epochs=3, verbose=0)
    path = folder / "teacher.keras"
    teacher.save(path)
    return path


def test_model_kinds_are_told_apart_without_loading(tmp_path):
    assert model_kind("mlp-tiny") == "zoo"
    assert model_kind("my_models:small_cnn") == "factory"
    assert model_kind({"class_name": "Sequential", "config": {}}) == "config"
    assert model_kind('{"class_name": "Sequential", "config": {}}') == (
        "config"
    )
    assert model_kind(str(tmp_path / "missing.keras")) is None
    assert model_kind("resnet-huge") is None
    with pytest.raises(ValueError, match="a zoo name .* a saved `.keras`"):
        RunConfig(teacher="resnet-huge")
    with pytest.raises(ValueError, match="an existing .keras file"):
        RunConfig(teacher=str(tmp_path / "missing.keras"))


def test_a_trained_teacher_file_is_used_as_it_is(teacher_file, tmp_path):
    before = sha256(teacher_file)
    mtime = os.path.getmtime(teacher_file)
    run = tmp_path / "run"
    argv = ["--run", str(run), "--dataset", "digits", *FAST]
    argv += ["--teacher", str(teacher_file), "--student", "mlp-tiny"]
    assert cli.main(["demo", *argv]) == 0
    assert sha256(teacher_file) == before
    assert os.path.getmtime(teacher_file) == mtime
    metrics = json.loads((run / "metrics.json").read_text())
    entry = metrics["teacher"]
    assert entry["trained_by_run"] is False
    assert entry["sha256"] == before
    assert entry["source"] == os.path.abspath(teacher_file)
    assert "history" not in entry  # never fitted
    # The run's copy is the same bytes; its accuracy is the file's.
    assert sha256(run / "teacher.keras") == before
    arrays = data.load_arrays("digits")
    teacher = keras.models.load_model(teacher_file)
    logits = teacher.predict(arrays.x_test, verbose=0)
    accuracy = float(np.mean(logits.argmax(-1) == arrays.y_test))
    assert entry["accuracy"] == pytest.approx(accuracy)
    # train-teacher again: still not trained, the file still untouched.
    assert cli.main(["train-teacher", *argv]) == 0
    assert sha256(teacher_file) == before


def test_a_changed_teacher_file_is_refused(teacher_file, tmp_path, capsys):
    user = tmp_path / "teacher.keras"
    user.write_bytes(teacher_file.read_bytes())
    run = tmp_path / "run"
    argv = ["--run", str(run), "--dataset", "digits", *FAST]
    argv += ["--teacher", str(user), "--student", "mlp-tiny"]
    assert cli.main(["train-teacher", *argv]) == 0
    changed = keras.models.load_model(user)
    changed.set_weights([w + 1.0 for w in changed.get_weights()])
    changed.save(user)
    capsys.readouterr()
    assert cli.main(["distill", *argv]) == 1
    err = capsys.readouterr().err
    assert "changed since this run recorded it" in err
    assert not (run / "student.keras").exists()


def test_a_factory_and_a_model_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "user_models.py").write_text(
        "import keras\n\n"
        "def small(input_shape, num_classes):\n"
        "    return keras.Sequential([\n"
        "        keras.Input(input_shape), keras.layers.Flatten(),\n"
        "        keras.layers.Dense(8, activation='relu'),\n"
        "        keras.layers.Dense(num_classes)], name='factory_student')\n"
    )
    config = digits_model("config_teacher", 24).get_config()
    spec = {"class_name": "Sequential", "config": config}
    (tmp_path / "run.json").write_text(
        json.dumps(
            {
                "dataset": "digits",
                "teacher": spec,
                "student": "user_models:small",
                "epochs": 1,
                "teacher_epochs": 1,
            }
        )
    )
    run = tmp_path / "run"
    argv = ["--run", str(run), "--config", "run.json", "--verbose", "0"]
    assert cli.main(["train-teacher", *argv]) == 0
    assert cli.main(["distill", *argv]) == 0
    assert cli.main(["scratch", *argv]) == 0
    teacher = keras.models.load_model(run / "teacher.keras")
    assert teacher.count_params() == digits_model("x", 24).count_params()
    student = keras.models.load_model(run / "student.keras")
    assert student.name == "factory_student"
    # Distilled and scratch students start from the same fresh weights:
    # the factory is called under the same seed for both.
    from keras_distill.app.models import build

    a = build("user_models:small", (8, 8, 1), 10, seed=1)
    b = build("user_models:small", (8, 8, 1), 10, seed=1)
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(x, y)


def test_a_student_file_starts_from_its_weights(tmp_path):
    student = digits_model("user_student", 8, seed=5)
    path = tmp_path / "student.keras"
    student.save(path)
    run = tmp_path / "run"
    argv = ["--run", str(run), "--dataset", "digits", "--verbose", "0"]
    argv += ["--teacher", "mlp-tiny", "--student", str(path)]
    argv += ["--epochs", "1", "--teacher-epochs", "1"]
    argv += ["--learning-rate", "1e-12"]  # a step that moves nothing
    assert cli.main(["train-teacher", *argv]) == 0
    assert cli.main(["distill", *argv]) == 0
    assert cli.main(["scratch", *argv]) == 0
    for name in ("student", "scratch"):
        trained = keras.models.load_model(run / f"{name}.keras")
        for a, b in zip(trained.get_weights(), student.get_weights()):
            np.testing.assert_allclose(a, b, atol=1e-6)


def test_a_teacher_of_another_input_size(tmp_path, capsys):
    """A 16×16 RGB teacher file on 8×8 grey digits: resized, repeated to
    three channels and scaled, inside the step and at evaluation."""
    arrays = data.load_arrays("digits")
    teacher = digits_model("big_teacher", 16, shape=(16, 16, 3))
    path = tmp_path / "teacher.keras"
    teacher.save(path)
    run = tmp_path / "run"
    argv = ["--run", str(run), "--dataset", "digits", *FAST]
    argv += ["--teacher", str(path), "--student", "mlp-tiny"]
    argv += ["--teacher-scale", "255", "--quantize", "float32"]
    assert cli.main(["demo", *argv]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    x = keras.ops.image.resize(arrays.x_test, (16, 16))
    x = keras.ops.concatenate([x, x, x], axis=-1) * 255.0
    logits = keras.ops.convert_to_numpy(teacher(x))
    errors = int(np.sum(logits.argmax(-1) != arrays.y_test))
    assert metrics["teacher"]["errors"] == errors
    # Channels that cannot be reconciled: a clear error.
    rgba = digits_model("rgba", 16, shape=(16, 16, 4))
    rgba.save(tmp_path / "rgba.keras")
    argv[argv.index(str(path))] = str(tmp_path / "rgba.keras")
    argv[argv.index(str(run))] = str(tmp_path / "run2")
    capsys.readouterr()
    assert cli.main(["demo", *argv]) == 1
    assert "Expected the same channel count" in capsys.readouterr().err
