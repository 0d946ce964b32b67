import inspect
import json
import os
import re
import warnings

import pytest

import keras_distill
from keras_distill.app import cli
from keras_distill.app.config import RECIPE_DEFAULTS
from keras_distill.app.config import RunConfig

TINY = [
    "--dataset",
    "digits",
    "--teacher",
    "mlp-tiny",
    "--student",
    "mlp-tiny",
    "--epochs",
    "1",
    "--teacher-epochs",
    "1",
    "--batch-size",
    "64",
    "--verbose",
    "0",
]


def run(argv, capsys):
    status = cli.main(argv)
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("runs") / "demo"
    status = cli.main(["demo", "--run", str(path), *TINY])
    assert status == 0
    return path


def test_demo_writes_the_run_directory(demo_run):
    for name in (
        "config.json",
        "teacher.keras",
        "student.keras",
        "scratch.keras",
        "metrics.json",
        "report.md",
        "curves.png",
        "size_accuracy.png",
        "student.tflite",
        "student_int8.tflite",
        "teacher.tflite",
    ):
        assert (demo_run / name).exists(), name
    # No temporary file is left behind.
    assert not [f for f in os.listdir(demo_run) if ".tmp" in f]


def test_metrics_json_has_what_the_report_reads(demo_run):
    metrics = json.loads((demo_run / "metrics.json").read_text())
    for name in ("teacher", "scratch", "student"):
        entry = metrics[name]
        for field in (
            "accuracy",
            "errors",
            "test_examples",
            "params",
            "keras_bytes",
            "history",
            "train_seconds",
        ):
            assert field in entry, (name, field)
        assert entry["errors"] == round(
            (1 - entry["accuracy"]) * entry["test_examples"]
        )
    assert "distillation_loss" in metrics["student"]["history"]
    assert set(metrics["tflite"]) == {
        "teacher_float32",
        "scratch_float32",
        "student_float32",
        "student_int8",
    }
    assert metrics["config"]["dataset"] == "digits"
    assert metrics["versions"]["keras"].startswith("3.")


def test_report_table(demo_run, capsys):
    status, out, _ = run(["report", "--run", str(demo_run)], capsys)
    assert status == 0
    assert "distilled student" in out and "student from scratch" in out
    assert "tflite int8" in out
    report = (demo_run / "report.md").read_text()
    assert "![curves.png](curves.png)" in report
    assert "| model | accuracy |" in report
    # The robustness table: digits are images, so every condition applies.
    assert "## Robustness" in report
    metrics = json.loads((demo_run / "metrics.json").read_text())
    for name in ("teacher", "scratch", "student"):
        table = metrics[name]["robustness"]
        assert set(table) == {
            "clean",
            "noise 0.1",
            "noise 0.3",
            "shift 2px",
            "contrast 0.5",
        }
        assert table["clean"] == pytest.approx(metrics[name]["accuracy"])
        accuracy = f"{100 * table['noise 0.3']:.1f}%"
        assert accuracy in report


def test_rerun_reuses_the_teacher(demo_run, capsys):
    before = os.path.getmtime(demo_run / "teacher.keras")
    status, out, _ = run(["train-teacher", "--run", str(demo_run)], capsys)
    assert status == 0
    assert "reusing" in out
    assert os.path.getmtime(demo_run / "teacher.keras") == before
    # Another teacher configuration retrains.
    status, out, _ = run(
        ["train-teacher", "--run", str(demo_run), "--seed", "3"], capsys
    )
    assert status == 0 and "reusing" not in out
    assert os.path.getmtime(demo_run / "teacher.keras") != before


def test_phases_one_at_a_time(tmp_path, capsys):
    path = str(tmp_path / "steps")
    assert run(["train-teacher", "--run", path, *TINY], capsys)[0] == 0
    # Later phases read the saved config: no need to repeat the options.
    assert run(["distill", "--run", path, "--verbose", "0"], capsys)[0] == 0
    assert run(["scratch", "--run", path, "--verbose", "0"], capsys)[0] == 0
    status, out, _ = run(["evaluate", "--run", path], capsys)
    assert status == 0 and "[evaluate] student" in out
    status, out, _ = run(
        ["export", "--run", path, "--quantize", "float16", "dynamic"], capsys
    )
    assert status == 0
    assert os.path.exists(os.path.join(path, "student_float16.tflite"))
    assert os.path.exists(os.path.join(path, "student_dynamic.tflite"))
    config = json.loads(open(os.path.join(path, "config.json")).read())
    assert config["teacher"] == "mlp-tiny"


def test_config_file_and_flag_precedence(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(
        "dataset: digits\nteacher: mlp-tiny\nstudent: mlp-tiny\n"
        "epochs: 1\nteacher_epochs: 1\ntemperature: 7.5\nalpha: 0.3\n"
    )
    path = str(tmp_path / "cfg")
    status, _, _ = run(
        [
            "train-teacher",
            "--run",
            path,
            "--config",
            str(config),
            "--alpha",
            "0.6",
            "--verbose",
            "0",
        ],
        capsys,
    )
    assert status == 0
    saved = json.loads(open(os.path.join(path, "config.json")).read())
    assert saved["temperature"] == 7.5  # from the file
    assert saved["alpha"] == 0.6  # the flag wins
    # JSON config files work too.
    json_config = tmp_path / "run.json"
    json_config.write_text(json.dumps({"losses": ["kd"], "epochs": 1}))
    args = cli.build_parser().parse_args(
        ["distill", "--run", path, "--config", str(json_config)]
    )
    _, resolved = cli.resolve_config(args)
    assert resolved.losses == ["kd"] and resolved.temperature == 7.5


@pytest.mark.parametrize(
    "content, match",
    [
        ("epochs: 1\ncolour: red\n", "configuration key.*'colour'"),
        ("epochs: -1\n", "Invalid value for `epochs`"),
        ("teacher: vgg\n", "Invalid value for `teacher`"),
        ("losses: [fitnet]\n", "registered loss names"),
        ("epochs: [1\n", "does not parse"),
        ("- 1\n- 2\n", "Expected a mapping"),
        ("strategy: tpu\n", "Invalid value for `strategy`"),
        ("features: [dense_1]\n", "Invalid value for `features`"),
        ("loss_weights: [-1]\n", "Invalid value for `loss_weights`"),
        ("alpha: high\n", "Invalid value for `alpha`"),
    ],
)
def test_bad_config_files(tmp_path, capsys, content, match):
    config = tmp_path / "bad.yaml"
    config.write_text(content)
    status, _, err = run(
        ["distill", "--run", str(tmp_path / "r"), "--config", str(config)],
        capsys,
    )
    assert status == 1
    assert "keras-distill: error:" in err
    assert re.search(match, err), err


def test_distill_before_teacher_says_what_to_run(tmp_path, capsys):
    status, _, err = run(
        ["distill", "--run", str(tmp_path / "empty"), *TINY], capsys
    )
    assert status == 1
    assert "run `keras-distill train-teacher" in err
    assert not (tmp_path / "empty").exists()


@pytest.mark.parametrize(
    "argv, match",
    [
        (["demo", "--dataset", "no-such-data"], "source='no-such-data'"),
        (["distill", "--dataset", "no-such-data"], "source='no-such-data'"),
        (["distill", "--dataset", "digits"], "run `keras-distill train-t"),
        (["export", "--dataset", "digits"], "run `keras-distill distill"),
    ],
)
def test_a_refused_command_leaves_the_folder_as_it_was(
    argv, match, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    status, _, err = run(argv, capsys)
    assert status == 1 and re.search(match, err), err
    assert os.listdir(tmp_path) == []


def test_abbreviated_options_are_refused_with_the_real_names(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["distill", "--data", "digits"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --data digits" in err
    assert "did you mean --dataset or --data-dir?" in err


def test_npz_with_text_labels_or_channel_less_images(tmp_path, capsys):
    import numpy as np

    from keras_distill.app import datasets as data

    rng = np.random.default_rng(0)
    x = rng.random((20, 8, 8)).astype("float32")
    text = tmp_path / "text.npz"
    labels = np.array(["cat", "dog"] * 10)
    np.savez(text, x_train=x, y_train=labels, x_test=x, y_test=labels)
    status, _, err = run(
        [
            "train-teacher",
            "--run",
            str(tmp_path / "r"),
            *TINY[2:],
            "--dataset",
            str(text),
        ],
        capsys,
    )
    assert status == 1
    assert "labels of dtype <U3 (text)" in err and "np.unique" in err
    assert not (tmp_path / "r").exists()
    floats = tmp_path / "floats.npz"
    y = rng.integers(0, 3, 20)
    np.savez(floats, x_train=x, y_train=y, x_test=x, y_test=y)
    arrays = data.load_arrays(str(floats))
    assert arrays.x_train.shape == (20, 8, 8, 1)


def test_augmentation_follows_the_image_size(tmp_path):
    from keras_distill.app.run import Run

    quiet = dict(log=lambda *_: None)
    small = Run(tmp_path / "digits", RunConfig(dataset="digits"), **quiet)
    assert small.augmentation("teacher") == "none"
    assert small.augmentation("student") == "none"
    big = Run(tmp_path / "mnist", RunConfig(dataset="mnist5k"), **quiet)
    assert big.augmentation("teacher") == "shift"
    chosen = Run(
        tmp_path / "chosen",
        RunConfig(dataset="digits", augment="shift"),
        **quiet,
    )
    assert chosen.augmentation("student") == "shift"
    assert chosen.augmentation("teacher") == "none"


def test_missing_config_file(tmp_path, capsys):
    status, _, err = run(
        ["demo", "--run", str(tmp_path / "r"), "--config", "nope.yaml"], capsys
    )
    assert status == 1 and "No such config file" in err


@pytest.mark.parametrize(
    "command",
    [
        "demo",
        *cli.PHASES,
        "bench",
        *(f"bench {b}" for b in ("accuracy", "recipes", "speed", "lm")),
    ],
)
def test_help_on_every_subcommand(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*command.split(), "--help"])
    assert exit_info.value.code == 0
    assert "usage: keras-distill" in capsys.readouterr().out


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "demo" in capsys.readouterr().out


def test_run_config_defaults_are_valid():
    config = RunConfig()
    assert config.dataset == "mnist5k"
    assert RunConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "recipe, temperature, alpha",
    [
        ("kd", 4.0, 0.1),
        ("reverse", 4.0, 0.5),
        ("born-again", 1.0, 0.5),
        ("mutual", 1.0, None),
    ],
)
def test_run_config_temperature_and_alpha_follow_the_recipe(
    recipe, temperature, alpha
):
    config = RunConfig(recipe=recipe)
    assert config.temperature is None and config.alpha is None
    resolved = config.resolved()
    assert (resolved.temperature, resolved.alpha) == (temperature, alpha)
    assert resolved.recipe == recipe and config.temperature is None
    # Values given win over the recipe's.
    given = RunConfig(recipe=recipe, temperature=3.0, alpha=0.0).resolved()
    assert (given.temperature, given.alpha) == (3.0, 0.0)
    # The library's recipe functions have the same defaults.
    from keras_distill import recipes

    function = {"reverse": "reverse_distill", "born-again": "born_again"}
    if recipe in function:
        params = inspect.signature(getattr(recipes, function[recipe]))
        assert (temperature, alpha) == (
            params.parameters["temperature"].default,
            params.parameters["alpha"].default,
        )
    # A config saved unset picks the recipe's defaults when read back with
    # another recipe.
    again = RunConfig.from_dict({**config.to_dict(), "recipe": "born-again"})
    assert again.resolved().temperature == 1.0


def test_run_config_refuses_a_bad_temperature_or_alpha():
    with pytest.raises(ValueError, match="a positive float or null"):
        RunConfig(temperature=0.0)
    with pytest.raises(ValueError, match=r"Received: alpha=1.5"):
        RunConfig(alpha=1.5)


def test_a_phase_alone_equals_the_same_phase_after_another(tmp_path):
    import numpy as np

    from keras_distill.app.run import Run

    config = RunConfig(
        dataset="digits",
        teacher="mlp-tiny",
        student="mlp-tiny",
        epochs=1,
        teacher_epochs=2,
        augment="shift",
    )
    quiet = dict(verbose=0, log=lambda *args: None)
    together = Run(tmp_path / "run", config, **quiet)
    together.train_teacher()
    first = together.distill().get_weights()
    alone = Run(tmp_path / "run", config, **quiet)  # reuses the teacher
    second = alone.distill().get_weights()
    for a, b in zip(first, second):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_distill_with_named_losses_and_hints(tmp_path, capsys):
    from keras_distill import losses
    from keras_distill.app.run import Run

    path = str(tmp_path / "methods")
    assert run(["train-teacher", "--run", path, *TINY], capsys)[0] == 0
    status, out, err = run(
        [
            "distill",
            "--run",
            path,
            "--verbose",
            "0",
            "--loss",
            "dkd",
            "--feature",
            "dense_1:dense_1",
            "--loss-weight",
            "1",
            "--loss-weight",
            "0.5",
            "--temperature",
            "3",
        ],
        capsys,
    )
    assert status == 0, err
    config = json.loads(open(os.path.join(path, "config.json")).read())
    assert config["losses"] == ["dkd"]
    assert config["features"] == ["dense_1:dense_1"]
    assert config["loss_weights"] == [1.0, 0.5]
    chosen = Run(path, log=lambda *_: None).distillation_losses()
    assert [type(x) for x in chosen] == [losses.DKD, losses.FeatureDistillation]
    assert chosen[0].temperature == 3.0
    assert (chosen[1].teacher_layer, chosen[1].student_layer) == (
        "dense_1",
        "dense_1",
    )


@pytest.mark.parametrize(
    "flags, match",
    [
        (["--feature", "dense_1"], "teacher_layer:student_layer"),
        (["--loss", "nope"], "registered loss names"),
    ],
)
def test_bad_method_flags(tmp_path, capsys, flags, match):
    status, _, err = run(
        ["distill", "--run", str(tmp_path / "bad"), *TINY, *flags], capsys
    )
    assert status == 1
    assert re.search(match, err)


def test_unwritable_run_directory(tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    status, _, err = run(
        ["train-teacher", "--run", str(blocker / "run"), *TINY], capsys
    )
    assert status == 1
    assert "Cannot create the run directory" in err


def test_strategy_and_backup_dir(tmp_path, capsys):
    path, backup = str(tmp_path / "run"), tmp_path / "backup"
    status, out, err = run(
        [
            "train-teacher",
            "--run",
            path,
            *TINY,
            "--strategy",
            "mirrored",
            "--backup-dir",
            str(backup),
        ],
        capsys,
    )
    assert status == 0, err
    assert "[strategy] mirrored: 1 replicas in sync" in out
    config = json.loads(open(os.path.join(path, "config.json")).read())
    assert config["strategy"] == "mirrored"
    assert config["backup_dir"] == str(backup)
    # A finished phase leaves no backup behind (Keras deletes it).
    assert not (backup / "teacher").exists() or not os.listdir(
        backup / "teacher"
    )


def test_a_phase_killed_mid_way_resumes_as_if_never_stopped(
    tmp_path, capsys, monkeypatch
):
    import keras
    import numpy as np

    args = [*TINY, "--teacher-epochs", "4", "--teacher-augment", "shift"]
    args += ["--strategy", "mirrored"]

    def teacher(name, backup=None):
        path = tmp_path / name
        extra = ["--backup-dir", str(backup)] if backup else []
        status, out, err = run(
            ["train-teacher", "--run", str(path), *args, *extra], capsys
        )
        assert status == 0, err
        model = keras.saving.load_model(path / "teacher.keras")
        return model.get_weights(), out

    straight, _ = teacher("straight")
    backup = tmp_path / "backup"
    real = keras.callbacks.BackupAndRestore

    class Killed(real):
        def on_epoch_begin(self, epoch, logs=None):
            super().on_epoch_begin(epoch, logs)
            self.now = epoch

        def on_train_batch_end(self, batch, logs=None):
            super().on_train_batch_end(batch, logs)
            if self.now == 2 and batch == 1:
                raise RuntimeError("killed")

    monkeypatch.setattr(keras.callbacks, "BackupAndRestore", Killed)
    with pytest.raises(RuntimeError, match="killed"):
        teacher("resumed", backup)
    monkeypatch.setattr(keras.callbacks, "BackupAndRestore", real)
    resumed, out = teacher("resumed", backup)
    assert "[teacher] resuming from the backup" in out
    # Epochs 2 and 3 read their own order and shifts, not epoch 0's.
    for a, b in zip(straight, resumed):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "recipe, check",
    [
        ("reverse", "reverse"),
        ("born-again", "born-again"),
        ("mutual", "mutual"),
    ],
)
def test_distill_recipes(tmp_path, capsys, recipe, check):
    path = str(tmp_path / recipe)
    flags = [
        "--run",
        path,
        *TINY,
        "--teacher",
        "mlp-small",
        "--recipe",
        recipe,
        "--generations",
        "2",
    ]
    assert run(["train-teacher", *flags], capsys)[0] == 0
    status, out, err = run(["distill", *flags], capsys)
    assert status == 0, err
    metrics = json.loads(open(os.path.join(path, "metrics.json")).read())
    config = metrics["config"]
    from keras_distill.app import zoo

    params = {
        n: zoo.build(n, (8, 8, 1), 10).count_params()
        for n in ("mlp-small", "mlp-tiny")
    }
    if check == "reverse":
        # The small model taught the large one.
        assert metrics["teacher"]["params"] == params["mlp-tiny"]
        assert metrics["student"]["params"] == params["mlp-small"]
    elif check == "born-again":
        assert len(metrics["student"]["generation_errors"]) == 2
        assert metrics["student"]["params"] == params["mlp-small"]
        assert "generation 2/2" in out
        # The recipe's defaults.
        assert "T=1.0, alpha=0.5" in out
    else:
        assert "peer_errors" in metrics["student"]
        history = metrics["student"]["history"]
        assert "mlp_tiny_loss" in history and "mlp_tiny_peer_loss" in history
    assert config["recipe"] == recipe
    # metrics.json records the values used; config.json keeps them unset.
    want = RECIPE_DEFAULTS[recipe]
    assert (config["temperature"], config["alpha"]) == (
        want["temperature"],
        want["alpha"],
    )
    saved = json.loads(open(os.path.join(path, "config.json")).read())
    assert saved["temperature"] is None and saved["alpha"] is None
    with warnings.catch_warnings():  # e.g. a legend with nothing drawn
        warnings.simplefilter("error")
        assert run(["report", "--run", path, "--verbose", "0"], capsys)[0] == 0
    assert os.path.exists(os.path.join(path, "curves.png"))
    report = open(os.path.join(path, "report.md")).read()
    assert f"recipe `{recipe}`, T = {want['temperature']}" in report


def test_consistent_augmentation_in_the_run(tmp_path, capsys):
    from keras_distill.app.run import Run
    from keras_distill.augment import Mixup
    from keras_distill.augment import RandomShift

    path = str(tmp_path / "fm")
    flags = ["--run", path, *TINY, "--augment", "consistent"]
    assert run(["train-teacher", *flags], capsys)[0] == 0
    status, _, err = run(["distill", *flags], capsys)
    assert status == 0, err
    layers = Run(path, log=lambda *_: None).consistent_augment().augment_layers
    assert [type(x) for x in layers] == [RandomShift, Mixup]


def test_digits_defaults_train_a_good_teacher(tmp_path, capsys):
    """No pixel shifts on 8x8 digits: the default teacher passes 90%."""
    path = str(tmp_path / "digits")
    flags = ["--run", path, "--dataset", "digits", "--verbose", "0"]
    assert run(["train-teacher", *flags], capsys)[0] == 0
    assert run(["evaluate", *flags], capsys)[0] == 0
    metrics = json.loads((tmp_path / "digits" / "metrics.json").read_text())
    assert metrics["teacher"]["accuracy"] > 0.90
    report = run(["report", *flags], capsys)[1]
    assert report.splitlines()[2].startswith("teacher")
    text = (tmp_path / "digits" / "report.md").read_text()
    assert "Augmentation: teacher `none`, students `none`" in text


HELP_WITHOUT_TENSORFLOW = """
import sys

sys.argv = ["keras-distill"]  # as the installed command sees it
from keras_distill.app import cli

for argv in (["--help"], ["distill", "--help"], ["bench", "recipes", "--help"]):
    try:
        cli.main(argv)
    except SystemExit as exit:
        assert exit.code == 0, exit.code
heavy = sorted(
    m for m in sys.modules if m.split(".")[0] in ("keras", "tensorflow")
)
assert not heavy, heavy[:5]
print("TENSORFLOW NOT IMPORTED")
"""


@pytest.mark.integration
def test_help_answers_without_importing_tensorflow():
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", HELP_WITHOUT_TENSORFLOW],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "TENSORFLOW NOT IMPORTED" in result.stdout
    assert "--temperature" in result.stdout  # the help was printed
    # `python -m keras_distill.app.cli` answers as fast: `-X importtime`
    # lists every module the process imports.
    command = [
        sys.executable,
        "-X",
        "importtime",
        "-m",
        "keras_distill.app.cli",
    ]
    for argv in (["--help"], ["distill", "--help"], ["bench", "lm", "--help"]):
        result = subprocess.run(
            command + argv,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.startswith("usage: keras-distill")
        imported = [
            line.rsplit("|", 1)[-1].strip()
            for line in result.stderr.splitlines()
            if line.startswith("import time:")
        ]
        assert "keras_distill.app.config" in imported  # the list was read
        heavy = [
            m for m in imported if m.split(".")[0] in ("keras", "tensorflow")
        ]
        assert not heavy, heavy[:5]


def test_the_command_lists_every_zoo_model_and_recipe_default():
    from keras_distill import recipes
    from keras_distill.app import config
    from keras_distill.app import zoo

    assert zoo.names() == sorted(config.MODELS)
    signatures = {
        "reverse": recipes.reverse_distill,
        "born-again": recipes.born_again,
        "mutual": recipes.MutualLearning.__init__,
    }
    for recipe, function in signatures.items():
        parameters = inspect.signature(function).parameters
        for name, value in config.RECIPE_DEFAULTS[recipe].items():
            expected = parameters[name].default if name in parameters else None
            assert value == expected, (recipe, name)


def test_compare_writes_the_frontier(demo_run, tmp_path, capsys):
    import shutil

    from keras_distill.app import compare

    path = tmp_path / "run"
    shutil.copytree(demo_run, path)
    argv = ["compare", "--run", str(path), "--prune-epochs", "1"]
    status, out, err = run(argv, capsys)
    assert status == 0, out + err
    result = json.loads((path / "frontier.json").read_text())
    rows = {r["model"]: r for r in result["rows"]}
    assert list(rows) == [
        "teacher",
        "teacher int8",
        "teacher pruned 50%",
        "teacher pruned 50% int8",
        "teacher pruned 75%",
        "teacher pruned 75% int8",
        "teacher pruned 90%",
        "teacher pruned 90% int8",
        "student from scratch",
        "student label smoothing 0.1",
        "student input noise",
        "student teacher-free KD",
        "transfer frozen",
        "transfer fine-tuned",
        "distilled student",
        "distilled student int8",
        "distilled student pruned 50%",
        "distilled student int8 quantization-aware",
        "distilled student pruned 50% int8 quantization-aware",
    ]
    for name, row in rows.items():
        assert 0 <= row["test_error"] <= 1, name
        assert 0 < row["nonzero"] <= row["params"], name
        assert row["gzip_bytes"] > 0 and row["latency_ms"] > 0, name
    dense = rows["teacher"]["nonzero"]
    for share in (50, 75, 90):
        nonzero = rows[f"teacher pruned {share}%"]["nonzero"]
        assert nonzero < dense * (1 - share / 100 + 0.05), share
    assert (
        rows["teacher pruned 90%"]["gzip_bytes"] < rows["teacher"]["gzip_bytes"]
    )
    # The quantization-aware rows count the float student's parameters,
    # and the pruned one keeps its zeros through the int8 fine-tune.
    student = rows["distilled student"]
    qat = rows["distilled student int8 quantization-aware"]
    both = rows["distilled student pruned 50% int8 quantization-aware"]
    assert qat["params"] == both["params"] == student["params"]
    assert both["nonzero"] < student["nonzero"] * 0.55
    assert qat["tflite_bytes"] < student["tflite_bytes"] / 2
    assert qat["within_one_step"] >= 0.999
    assert student["within_one_step"] is None
    # The other ways to a small model: at the student's size (the transfer
    # model: the mlp-tiny teacher's hidden layer under a new linear head).
    scratch = rows["student from scratch"]
    for name in (
        "student label smoothing 0.1",
        "student input noise",
        "student teacher-free KD",
    ):
        assert rows[name]["params"] == scratch["params"], name
    assert rows["student input noise"]["noise_stddev"] > 0
    for name in ("transfer frozen", "transfer fine-tuned"):
        assert rows[name]["params"] == rows["teacher"]["params"], name
        assert rows[name]["prefix_until"]
    points = {n: (r["gzip_bytes"], r["test_error"]) for n, r in rows.items()}
    assert result["front"] == compare.pareto_front(points)
    markdown = (path / "frontier.md").read_text()
    assert all(name in markdown for name in rows)
    assert "Pareto front" in markdown and "On the front" in out
    assert (path / "frontier.png").read_bytes()[:4] == b"\x89PNG"
    report = (path / "report.md").read_text()
    assert "## Compression frontier" in report and "frontier.png" in report


def test_a_run_distils_its_student_quantization_aware(demo_run, tmp_path):
    import shutil

    from keras_distill.app.config import RunConfig
    from keras_distill.app.run import Run

    path = tmp_path / "run"
    shutil.copytree(demo_run, path)
    config = RunConfig.from_dict(
        {**json.loads((path / "config.json").read_text()),
         "quantization_aware_epochs": 1}
    )
    quiet = dict(verbose=0, log=lambda *args: None)
    run_ = Run(path, config, **quiet)
    run_._quantization_aware(run_.load("teacher"), run_.load("student"))
    twin = run_.load("student_qat")
    assert keras_distill.quantization.is_quantization_aware(twin)
    metrics = run_.evaluate()
    reports = run_.export(["int8"])
    entry = reports["student_qat_int8"]
    assert entry["within_one_step"] >= 0.999
    # The file classifies the test set as the evaluated twin does.
    accuracy = metrics["student_qat"]["accuracy"]
    assert entry["keras_accuracy"] == pytest.approx(accuracy)
    assert abs(entry["accuracy"] - accuracy) <= 0.01
    assert (path / "student_qat_int8.tflite").exists()
    with pytest.raises(ValueError, match="quantization_aware_epochs"):
        RunConfig(quantization_aware_epochs=-1)


def test_compare_distils_a_small_cnn_of_a_cnn_teachers_family(tmp_path):
    from keras_distill.app import compare
    from keras_distill.app import zoo
    from keras_distill.app.run import Run

    quiet = dict(verbose=0, log=lambda *args: None)
    config = RunConfig(dataset="digits", teacher="cnn-medium", epochs=1)
    run_ = Run(tmp_path / "cnn", config, **quiet)
    shape = tuple(run_.data.input_shape)
    teacher = zoo.build("cnn-medium", shape, 10, seed=0)
    small = compare.small_cnn(run_, teacher, log=lambda *args: None)
    assert small.count_params() * 8 <= teacher.count_params()
    assert small.name == compare.SMALL_CNN.replace("-", "_")
    # An MLP teacher has no CNN family: no rows.
    mlp_config = RunConfig(dataset="digits", teacher="mlp-tiny")
    mlp = Run(tmp_path / "mlp", mlp_config, **quiet)
    assert compare.small_cnn(mlp, teacher, log=lambda *args: None) is None


def test_pareto_front_keeps_the_undominated_points():
    from keras_distill.app.compare import pareto_front

    points = {
        "big good": (100, 0.01),
        "small bad": (10, 0.10),
        "small better": (12, 0.05),
        "dominated": (50, 0.06),
        "bigger worse": (200, 0.02),
    }
    assert pareto_front(points) == ["small bad", "small better", "big good"]


def test_compare_needs_the_three_models(tmp_path, capsys):
    argv = ["compare", "--run", str(tmp_path / "empty"), *TINY]
    status, _, err = run(argv, capsys)
    assert status == 1 and "keras-distill train-teacher" in err
