"""The whole job on the user's own data folders: an image folder with the
user's trained teacher file (distil, scratch, evaluate, export, report,
compare), a text folder with the user's own string models, and a bad
folder refused before anything is written."""

import hashlib
import json
import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_distill.app import cli

QUIET = ["--verbose", "0", "--epochs", "1", "--teacher-epochs", "1"]


def _image_folder(root, per_class=10, size=12):
    """Three classes of 12×12 RGB PNGs, told apart by their colour."""
    rng = np.random.default_rng(0)
    for label in range(3):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (size, size, 3))
            pixels[..., label] += 150
            png = tf.io.encode_png(pixels.astype("uint8"))
            tf.io.write_file(str(folder / f"{i:02d}.png"), png)


def test_an_image_folder_with_a_teacher_file(tmp_path, capsys):
    _image_folder(tmp_path / "images")
    teacher = keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3),
        ],
        name="user_teacher",
    )
    path = tmp_path / "teacher.keras"
    teacher.save(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    run = tmp_path / "run"
    argv = ["--run", str(run), "--dataset", str(tmp_path / "images")]
    argv += ["--teacher", str(path), "--student", "mlp-tiny", *QUIET]
    assert cli.main(["demo", *argv]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    # A stratified fifth of each class is the test split: 2 of 10 each.
    assert metrics["student"]["test_examples"] == 6
    assert metrics["teacher"]["trained_by_run"] is False
    assert "robustness" in metrics["student"]
    for name in ("report.md", "student.tflite", "student_int8.tflite"):
        assert (run / name).exists(), name
    assert cli.main(["compare", "--run", str(run), "--prune-epochs", "1"]) == 0
    frontier = json.loads((run / "frontier.json").read_text())
    rows = {row["model"]: row for row in frontier["rows"]}
    assert rows["teacher"]["params"] == teacher.count_params()
    # The user's file was never written, whatever ran.
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def _text_models(folder):
    """A factory module of string models (TextVectorization first)."""
    (folder / "text_models.py").write_text(
        "import keras\n\n"
        "WORDS = ['red', 'green', 'blue', 'sky', 'grass', 'fire']\n\n\n"
        "def model(num_classes, width=8):\n"
        "    inputs = keras.Input((), dtype='string')\n"
        "    h = keras.layers.TextVectorization(\n"
        "        vocabulary=WORDS, output_sequence_length=6)(inputs)\n"
        "    h = keras.layers.Embedding(len(WORDS) + 2, width)(h)\n"
        "    h = keras.layers.GlobalAveragePooling1D()(h)\n"
        "    return keras.Model(inputs, keras.layers.Dense(num_classes)(h))\n"
        "\n\n"
        "def teacher(num_classes):\n"
        "    return model(num_classes, 16)\n\n\n"
        "def student(num_classes):\n"
        "    return model(num_classes, 4)\n"
    )


def test_a_text_folder_with_the_users_string_models(tmp_path, monkeypatch):
    words = [["red", "fire"], ["green", "grass"], ["blue", "sky"]]
    for label, (a, b) in enumerate(words):
        folder = tmp_path / "texts" / f"class_{label}"
        folder.mkdir(parents=True)
        for i in range(10):
            (folder / f"{i}.txt").write_text(f"{a} {b} {a}" if i % 2 else a)
    _text_models(tmp_path)
    monkeypatch.chdir(tmp_path)
    argv = ["--run", "run", "--dataset", "texts", *QUIET]
    argv += ["--teacher", "text_models:teacher"]
    argv += ["--student", "text_models:student"]
    assert cli.main(["demo", *argv]) == 0
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["student"]["test_examples"] == 6
    # Exported from token ids, the vocabulary beside each file.
    vocabulary = (run / "student_int8.vocabulary.txt").read_text().split()
    assert vocabulary[1:] == ["red", "green", "blue", "sky", "grass", "fire"]
    assert metrics["tflite"]["student_float32"]["argmax_agreement"] == 1.0


@pytest.mark.parametrize(
    "case",
    [
        "loose-files",
        "empty",
        "one-class",
        "empty-class",
        "mixed",
        "bad-image",
        "bad-text",
    ],
)
def test_a_bad_folder_is_refused_before_anything_is_written(
    tmp_path, capsys, case
):
    from test_folders import BAD_FOLDERS
    from test_folders import BAD_IDS

    make, match = BAD_FOLDERS[BAD_IDS.index(case)]
    make(tmp_path / "data")
    run = tmp_path / "run"
    argv = ["demo", "--run", str(run), "--dataset", str(tmp_path / "data")]
    assert cli.main(argv) == 1
    assert re.search(match, capsys.readouterr().err)
    assert not os.path.exists(run)


def test_test_folder_classes_must_match_before_any_write(tmp_path, capsys):
    _image_folder(tmp_path / "train")
    _image_folder(tmp_path / "test")
    for f in (tmp_path / "test" / "class_2").iterdir():
        f.unlink()
    (tmp_path / "test" / "class_2").rmdir()
    run = tmp_path / "run"
    argv = ["demo", "--run", str(run), "--dataset", str(tmp_path / "train")]
    argv += ["--test-dataset", str(tmp_path / "test")]
    assert cli.main(argv) == 1
    assert "class_2" in capsys.readouterr().err
    assert not os.path.exists(run)


def test_a_teacher_cache_from_a_folder(tmp_path):
    from keras_distill.app import datasets
    from keras_distill.teachers import TeacherCache

    _image_folder(tmp_path / "images", per_class=4)
    folder = datasets.load(tmp_path / "images", batch_size=5, seed=0)
    teacher = keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    cache = TeacherCache(teacher, folder.train, verbose=0)
    x, y = datasets.take_arrays(folder.train, 100)
    assert len(x) == 9  # 12 images, a stratified test fifth: 1 per class
    batches = list(cache.dataset(batch_size=9, shuffle=False))
    features, labels = batches[0][0], batches[0][1]
    np.testing.assert_allclose(
        features["teacher_outputs"],
        keras.ops.convert_to_numpy(teacher(features["inputs"])),
        atol=1e-5,
    )
    assert sorted(np.asarray(labels)) == sorted(y)
