"""Distillation under tf.distribute gives the one-device result."""

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import tensorflow as tf
from conftest import mlp
from conftest import needs_keras_distillation

import keras_distill

# Two logical CPU devices, for a MirroredStrategy of two replicas.
TWO_DEVICES = textwrap.dedent(
    """
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    import keras
    import numpy as np
    import keras_distill
    """
)

SCRIPT = TWO_DEVICES + textwrap.dedent(
    """

    rng = np.random.default_rng(0)
    x = rng.normal(size=(160, 6)).astype("float32")
    y = rng.integers(0, 3, size=160).astype("int32")

    def mlp(hidden, name, seed, l2=None):
        init = keras.initializers.GlorotUniform(seed=seed)
        reg = keras.regularizers.L2(l2) if l2 else None
        inputs = keras.Input((6,))
        h = keras.layers.Dense(hidden, "relu", kernel_initializer=init,
                               kernel_regularizer=reg, name="hidden")(inputs)
        out = keras.layers.Dense(3, kernel_initializer=init)(h)
        return keras.Model(inputs, out, name=name)

    feature = keras.distillation.FeatureDistillation(
        loss=keras.losses.MeanSquaredError(),
        teacher_layer_name="hidden", student_layer_name="hidden",
    )
    CONFIGS = {
        "kd_l2": dict(student_hidden=8, l2=0.01, losses=None),
        "kd_keras_feature": dict(student_hidden=16, l2=None,
                                 losses=["kd", feature]),
        # An adapter created under the scope, a keras.losses.Loss inside
        # our feature loss, and DKD with its labels.
        "dkd_hint_adapter": dict(student_hidden=8, l2=None, losses=lambda: [
            keras_distill.losses.DKD(warmup_epochs=0),
            keras_distill.losses.FeatureDistillation(
                "hidden", loss=keras.losses.MeanSquaredError()),
        ]),
        "ensemble": dict(student_hidden=8, l2=None, losses=None,
                         ensemble=True),
        "cached": dict(student_hidden=8, l2=None, losses=None, cached=True),
    }

    def run(strategy, config):
        keras.utils.set_random_seed(0)  # the same adapter weights
        with strategy.scope():
            teacher = mlp(16, "teacher", 1)
            if config.get("ensemble"):
                teacher = keras_distill.teachers.Ensemble(
                    [teacher, mlp(16, "teacher2", 5)], weights=[0.7, 0.3])
            distiller = keras_distill.Distiller(
                teacher,
                mlp(config["student_hidden"], "student", 2, l2=config["l2"]),
                distillation_losses=(
                    config["losses"]() if callable(config["losses"])
                    else config["losses"]),
                student_loss_weight=0.3,
            )
            distiller.compile(
                keras.optimizers.SGD(0.1),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            )
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
        if config.get("cached"):
            with strategy.scope():
                cache = keras_distill.teachers.TeacherCache(
                    distiller.teacher, x, verbose=0)
            ds = cache.dataset(x, y, batch_size=16, shuffle=False)
        history = distiller.fit(ds, epochs=2, verbose=0)  # 20 steps
        return distiller.student.get_weights(), history.history

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    report = {}
    for name, config in CONFIGS.items():
        one_w, one_h = run(tf.distribute.get_strategy(), config)
        two_w, two_h = run(mirrored, config)
        report[name] = {
            "max_weight_diff": max(
                float(np.abs(a - b).max()) for a, b in zip(one_w, two_w)),
            "one": one_h, "two": two_h,
        }

    def fit_seeded_pipeline(strategy):
        # The pipeline's order and shifts keyed by the epoch: under a
        # strategy, fit peeks at a first batch before training, which
        # must not move epoch 0 to the second pass.
        with strategy.scope():
            resumable = keras_distill.callbacks.ResumableData()
            with resumable:
                d = keras_distill.app.datasets.load(
                    "digits", batch_size=256, seed=0
                )
                train = keras_distill.pipelines.shift_augment(d.train, seed=1)
            inputs = keras.Input(d.input_shape)
            init = keras.initializers.GlorotUniform(seed=2)
            flat = keras.layers.Flatten()(inputs)
            model = keras.Model(
                inputs, keras.layers.Dense(10, kernel_initializer=init)(flat))
            model.compile(
                keras.optimizers.SGD(0.5),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            )
        history = model.fit(train, epochs=3, verbose=0, shuffle=False,
                            callbacks=[resumable])
        return model.get_weights(), history.history

    def fit_masked_tokens(strategy, losses=lambda: None):
        # Padded tokens with a Keras mask and (batch, time) weights: every
        # replica's half-batch holds as many valid tokens, so per-replica
        # means over valid tokens equal the global one.
        rng = np.random.default_rng(1)
        tokens = rng.integers(1, 12, (64, 6)).astype("int32")
        lengths = np.tile([2, 6, 3, 5], 16)
        valid = np.arange(6)[None] < lengths[:, None]
        tokens[~valid] = 0
        labels = rng.integers(0, 4, (64, 6)).astype("int32")
        weights = rng.uniform(0.5, 2.0, (64, 6)).astype("float32")

        def tagger(dim, name, seed):
            init = keras.initializers.GlorotUniform(seed=seed)
            inputs = keras.Input((6,), dtype="int32")
            h = keras.layers.Embedding(12, dim, mask_zero=True,
                                       embeddings_initializer=init)(inputs)
            out = keras.layers.Dense(4, kernel_initializer=init)(h)
            return keras.Model(inputs, out, name=name)

        with strategy.scope():
            distiller = keras_distill.Distiller(
                tagger(8, "teacher", 1), tagger(4, "student", 2),
                losses(), student_loss_weight=0.3)
            distiller.compile(
                keras.optimizers.SGD(0.5),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            )
        ds = tf.data.Dataset.from_tensor_slices(
            (tokens, labels, weights)).batch(16)
        history = distiller.fit(ds, epochs=2, verbose=0)
        return distiller.student.get_weights(), history.history

    one_w, one_h = fit_masked_tokens(tf.distribute.get_strategy())
    two_w, two_h = fit_masked_tokens(mirrored)
    report["masked_tokens"] = {
        "max_weight_diff": max(
            float(np.abs(a - b).max()) for a, b in zip(one_w, two_w)),
        "one": one_h, "two": two_h,
    }

    # The loss over chunks of 5 positions (48 a replica: 5 does not
    # divide them), compiled with XLA inside each replica's step.
    def chunked():
        # The default reduction: a mean per valid token would differ per
        # replica with these random weights.
        return keras_distill.losses.GeneralizedJSD(0.5, 2.0, chunk_size=5)

    one_w, one_h = fit_masked_tokens(tf.distribute.get_strategy(), chunked)
    two_w, two_h = fit_masked_tokens(mirrored, chunked)
    report["masked_tokens_chunked"] = {
        "max_weight_diff": max(
            float(np.abs(a - b).max()) for a, b in zip(one_w, two_w)),
        "one": one_h, "two": two_h,
    }

    one_w, one_h = fit_seeded_pipeline(tf.distribute.get_strategy())
    two_w, two_h = fit_seeded_pipeline(mirrored)
    report["seeded_pipeline"] = {
        "max_weight_diff": max(
            float(np.abs(a - b).max()) for a, b in zip(one_w, two_w)),
        "one": one_h, "two": two_h,
    }

    def fit_on_policy(strategy):
        # Greedy on-policy rows (the same tokens on any replica), every
        # row generated: the same generated positions on each replica.
        stream = np.random.default_rng(2).integers(0, 7, (32, 9))
        stream = stream.astype("int32")

        def lm(dim, seed, name):
            init = keras.initializers.GlorotUniform(seed=seed)
            tokens = keras.Input((8,), dtype="int32")
            h = keras.layers.Embedding(7, dim, embeddings_initializer=init)(
                tokens)
            h = keras.layers.Conv1D(dim, 3, padding="causal",
                                    activation="tanh",
                                    kernel_initializer=init)(h)
            return keras.Model(
                tokens, keras.layers.Dense(7, kernel_initializer=init)(h),
                name=name)

        with strategy.scope():
            distiller = keras_distill.Distiller(
                lm(16, 1, "teacher"), lm(4, 2, "student"),
                keras_distill.losses.ReverseKL(
                    reduction="mean_with_sample_weight"),
                student_loss_weight=0.0,
                generation=keras_distill.on_policy.OnPolicy(
                    1.0, prompt_length=3, new_tokens=4, temperature=0.0),
            )
            distiller.compile(keras.optimizers.SGD(0.5))
        history = distiller.fit(stream[:, :-1], stream[:, 1:], batch_size=16,
                                epochs=2, verbose=0, shuffle=False)
        return distiller.student.get_weights(), history.history

    one_w, one_h = fit_on_policy(tf.distribute.get_strategy())
    two_w, two_h = fit_on_policy(mirrored)
    report["on_policy_greedy"] = {
        "max_weight_diff": max(
            float(np.abs(a - b).max()) for a, b in zip(one_w, two_w)),
        "one": one_h, "two": two_h,
    }
    print(json.dumps(report))
    """
)


@needs_keras_distillation
@pytest.mark.integration
def test_mirrored_strategy_matches_one_device():
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reports = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(reports) == {
        "kd_l2",
        "kd_keras_feature",
        "dkd_hint_adapter",
        "ensemble",
        "cached",
        "seeded_pipeline",
        "masked_tokens",
        "masked_tokens_chunked",
        "on_policy_greedy",
    }
    for name, report in reports.items():
        assert report["max_weight_diff"] < 1e-5, name
        for key in ("loss", "student_loss", "distillation_loss"):
            if name == "seeded_pipeline" and key != "loss":
                continue  # a plain model: its loss alone
            for a, b in zip(report["one"][key], report["two"][key]):
                assert abs(a - b) < 1e-5, (name, key, a, b)


@pytest.mark.parametrize(
    "tf_config, index",
    [
        (None, 0),
        ({"cluster": {"worker": ["a", "b"]}, "task": {"index": 1}}, 0),
        (
            {
                "cluster": {"worker": ["a", "b"]},
                "task": {"type": "worker", "index": 1},
            },
            1,
        ),
        (
            {
                "cluster": {"chief": ["c"], "worker": ["a"]},
                "task": {"type": "worker", "index": 0},
            },
            1,
        ),
        (
            {
                "cluster": {"chief": ["c"], "worker": ["a"]},
                "task": {"type": "chief", "index": 0},
            },
            0,
        ),
    ],
)
def test_worker_index_of_a_run(monkeypatch, tf_config, index):
    # Non-chief workers of a run write into `<run>/worker-<index>`.
    from keras_distill.app.rundir import _worker_index

    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    assert _worker_index() == index


def test_worker_index_refuses_bad_tf_config(monkeypatch):
    from keras_distill.app.rundir import _worker_index

    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="Invalid TF_CONFIG.*Expected JSON"):
        _worker_index()


def test_each_worker_keeps_its_own_files_and_backups(monkeypatch, tmp_path):
    from keras_distill.app.config import RunConfig
    from keras_distill.app.run import Run

    backup = str(tmp_path / "backup")
    config = RunConfig(strategy="multi-worker", backup_dir=backup)
    for index, folder in ((0, ""), (1, "worker-1")):
        monkeypatch.setenv(
            "TF_CONFIG",
            json.dumps(
                {
                    "cluster": {"worker": ["a", "b"]},
                    "task": {"type": "worker", "index": index},
                }
            ),
        )
        run = Run(tmp_path / "run", config, log=lambda *a: None)
        assert os.path.normpath(run.path) == os.path.normpath(
            os.path.join(str(tmp_path / "run"), folder)
        )
        assert run.backup_dir("teacher") == os.path.join(
            backup, folder, "teacher"
        )
    assert Run(tmp_path / "other", RunConfig()).backup_dir("teacher") is None


@pytest.mark.integration
def test_the_command_line_starts_a_multi_worker_strategy(tmp_path):
    # TensorFlow accepts a multi-worker strategy only before its runtime
    # starts: the command must create it before its first TensorFlow op.
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    tf_config = {
        "cluster": {"worker": [f"localhost:{port}"]},
        "task": {"type": "worker", "index": 0},
    }
    env = dict(os.environ, TF_CONFIG=json.dumps(tf_config))
    run = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "keras_distill.app.cli",
            "train-teacher",
            "--run",
            str(run),
            "--dataset",
            "digits",
            "--teacher",
            "mlp-tiny",
            "--teacher-epochs",
            "1",
            "--verbose",
            "0",
            "--strategy",
            "multi-worker",
            "--backup-dir",
            str(tmp_path / "backup"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[strategy] multi-worker: 1 replicas in sync" in result.stdout
    assert (run / "teacher.keras").exists()


def test_a_student_built_outside_the_strategy_scope_is_refused():
    student = mlp(4, "outside_student", seed=2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        teacher = mlp(8, "inside_teacher", seed=1)
        with pytest.raises(ValueError, match="inside `with strategy.scope"):
            keras_distill.Distiller(teacher, student)
        inside = mlp(4, "inside_student", seed=2)
        keras_distill.Distiller(teacher, inside)  # built in the scope: fine


NAN_SCRIPT = TWO_DEVICES + textwrap.dedent(
    """

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = rng.integers(0, 3, size=64).astype("int32")
    x[37, 1] = np.nan  # one row of the third batch, on one replica

    def mlp(hidden, name, seed):
        init = keras.initializers.GlorotUniform(seed=seed)
        inputs = keras.Input((6,))
        h = keras.layers.Dense(hidden, "relu", kernel_initializer=init)(inputs)
        h = keras.layers.BatchNormalization()(h)
        out = keras.layers.Dense(3, kernel_initializer=init)(h)
        return keras.Model(inputs, out, name=name)

    def run(batches):
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            d = keras_distill.Distiller(mlp(8, "t", 1), mlp(4, "s", 2))
            d.compile(
                keras.optimizers.Adam(0.05),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            )
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
        error = None
        try:
            d.fit(ds.take(batches), epochs=1, verbose=0)
        except keras_distill._checks.NonFiniteLossError as e:
            error = str(e)
        return d, error

    bad, error = run(4)
    good, _ = run(2)
    print(json.dumps({
        "error": error,
        "iterations": int(bad.optimizer.iterations.numpy()),
        "equal": all(
            np.array_equal(a.numpy(), b.numpy())
            for a, b in zip(bad.student.weights + bad.optimizer.variables,
                            good.student.weights + good.optimizer.variables)
        ),
    }))
    """
)


def test_a_non_finite_step_on_one_replica_changes_no_weight():
    result = subprocess.run(
        [sys.executable, "-c", NAN_SCRIPT],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert "epoch 1, batch 3" in report["error"]
    assert report["iterations"] == 2 and report["equal"]


QAT_SCRIPT = TWO_DEVICES + textwrap.dedent(
    """
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = rng.integers(0, 3, 64)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    quantization = keras_distill.quantization
    with strategy.scope():
        def mlp(width):
            return keras.Sequential([
                keras.Input((6,)),
                keras.layers.Dense(width, activation="relu"),
                keras.layers.Dense(3),
            ])
        twin = quantization.quantization_aware(mlp(8))
        distiller = keras_distill.Distiller(mlp(16), twin)
        distiller.compile(
            "adam", keras.losses.SparseCategoricalCrossentropy(True))
    history = distiller.fit(x, y, batch_size=16, epochs=2, verbose=0)
    ranges = quantization._twin.quantizers(twin)
    # Each replica holds the same (averaged) range.
    same = all(
        np.allclose(*[v.numpy() for v in
                      strategy.experimental_local_results(q.range_max.value)])
        for q in ranges
    )
    print(json.dumps({
        "loss": history.history["loss"],
        "batches": [float(q.batches.numpy()) for q in ranges],
        "same": bool(same),
    }))
    """
)


def test_a_quantization_aware_student_trains_on_two_replicas():
    result = subprocess.run(
        [sys.executable, "-c", QAT_SCRIPT],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(math.isfinite(v) for v in report["loss"])
    assert report["batches"] == [8.0] * 3  # 2 epochs of 4 global batches
    assert report["same"]
