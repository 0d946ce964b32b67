"""Multi-worker training, resuming after kill -9, and determinism.

The multi-worker, kill -9 and determinism cases run real processes
(subprocesses), bounded in time, and compare the student weights they
write.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

COMMON = textwrap.dedent(
    """
    import json, os, signal, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf
    import keras
    import numpy as np
    import keras_distill

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int32") + (x[:, 2] > 1)

    def mlp(hidden, name, seed, dropout=0.0):
        init = keras.initializers.GlorotUniform(seed=seed)
        inputs = keras.Input((6,))
        h = keras.layers.Dense(hidden, "relu", kernel_initializer=init)(inputs)
        if dropout:
            h = keras.layers.Dropout(dropout)(h)
        out = keras.layers.Dense(3, kernel_initializer=init)(h)
        return keras.Model(inputs, out, name=name)

    def unbuilt(hidden, name, seed):
        init = keras.initializers.GlorotUniform(seed=seed)
        return keras.Sequential([
            keras.layers.Dense(hidden, "relu", kernel_initializer=init),
            keras.layers.Dense(3, kernel_initializer=init),
        ], name=name)

    def distiller(optimizer="adam", built=True):
        make = mlp if built else unbuilt
        d = keras_distill.Distiller(
            make(16, "teacher", 1), make(8, "student", 2),
            student_loss_weight=0.3,
        )
        d.compile(
            keras.optimizers.get(optimizer),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        return d

    def save(model, path):
        np.savez(path, *model.get_weights())
    """
)

MULTI_WORKER = COMMON + textwrap.dedent(
    """
    out, plain_out = sys.argv[1:3]
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        d = distiller("sgd")
        plain = mlp(8, "plain", 3)
        trainer = keras_distill.distribute.MultiWorkerModel(plain)
        trainer.compile("sgd", keras.losses.SparseCategoricalCrossentropy(
            from_logits=True))
        peers = [mlp(8, "peer_a", 4), mlp(8, "peer_b", 5)]
        mutual = keras_distill.recipes.MutualLearning(peers)
        mutual.compile("sgd")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    history = d.fit(ds, epochs=2, verbose=0)
    trainer.fit(ds, epochs=2, verbose=0)
    mutual.fit(ds, epochs=2, verbose=0)
    save(d.student, out)
    save(plain, plain_out)
    save(peers[1], plain_out.replace("plain", "peer"))
    print(json.dumps({"loss": history.history["loss"],
                      "replicas": strategy.num_replicas_in_sync}))
    """
)

ONE_DEVICE = COMMON + textwrap.dedent(
    """
    d = distiller("sgd")
    plain = mlp(8, "plain", 3)
    plain.compile("sgd", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    peers = [mlp(8, "peer_a", 4), mlp(8, "peer_b", 5)]
    mutual = keras_distill.recipes.MutualLearning(peers)
    mutual.compile("sgd")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    d.fit(ds, epochs=2, verbose=0)
    plain.fit(ds, epochs=2, verbose=0)
    mutual.fit(ds, epochs=2, verbose=0)
    save(d.student, sys.argv[1])
    save(plain, sys.argv[2])
    save(peers[1], sys.argv[2].replace("plain", "peer"))
    """
)

RESUMABLE = COMMON + textwrap.dedent(
    """
    backup, out, log, kill_epoch = sys.argv[1:5]
    kill_epoch = int(kill_epoch)

    class Crash(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            with open(log, "a") as f:
                f.write(f"{epoch}\\n")

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == kill_epoch and batch == 2:
                os.kill(os.getpid(), signal.SIGKILL)  # kill -9, mid-epoch

    d = distiller("adam", built=False)  # built on the first batch
    assert not d.student.built
    d.fit(
        x, y, batch_size=8, epochs=4, verbose=0, shuffle=False,
        callbacks=[keras.callbacks.BackupAndRestore(backup), Crash()],
    )
    save(d.student, out)
    """
)

SEEDED = COMMON + textwrap.dedent(
    """
    keras.utils.set_random_seed(123)
    tf.config.experimental.enable_op_determinism()
    teacher = mlp(16, "teacher", None)
    student = mlp(8, "student", None, dropout=0.3)  # unseeded + dropout
    d = keras_distill.Distiller(teacher, student)
    d.compile("adam", keras.losses.SparseCategoricalCrossentropy(True))
    ds = (tf.data.Dataset.from_tensor_slices((x, y))
          .shuffle(64).batch(8))  # shuffled from the global seed
    d.fit(ds, epochs=3, verbose=0)
    save(d.student, sys.argv[1])
    """
)


def python(script, *args, env=None, timeout=240):
    return subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, KERAS_BACKEND="tensorflow", **(env or {})),
    )


def weights(path):
    with np.load(path) as f:
        return [f[k] for k in sorted(f.files, key=lambda k: int(k[4:]))]


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_multi_worker_mirrored_strategy_on_two_local_workers(tmp_path):
    ports = free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    workers = []
    try:
        for index in range(2):
            tf_config = {
                "cluster": cluster,
                "task": {"type": "worker", "index": index},
            }
            workers.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        MULTI_WORKER,
                        str(tmp_path / f"worker{index}.npz"),
                        str(tmp_path / f"plain{index}.npz"),
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=dict(
                        os.environ,
                        KERAS_BACKEND="tensorflow",
                        TF_CONFIG=json.dumps(tf_config),
                    ),
                )
            )
        outputs = [w.communicate(timeout=240) for w in workers]
    finally:
        for w in workers:  # never leave a worker behind
            if w.poll() is None:
                w.kill()
                w.wait()
    for w, (out, err) in zip(workers, outputs):
        assert w.returncode == 0, err[-3000:]
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert [r["replicas"] for r in reports] == [2, 2]
    assert reports[0]["loss"] == reports[1]["loss"]
    first, second = (weights(tmp_path / f"worker{i}.npz") for i in range(2))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    # Two workers on the same global batch train as one device does, and
    # so do a plain model through MultiWorkerModel and MutualLearning.
    one = python(ONE_DEVICE, tmp_path / "one.npz", tmp_path / "plain.npz")
    assert one.returncode == 0, one.stderr[-3000:]
    for a, b in zip(first, weights(tmp_path / "one.npz")):
        np.testing.assert_allclose(a, b, atol=1e-5)
    for name in ("plain", "peer"):  # MultiWorkerModel, MutualLearning
        pair = [weights(tmp_path / f"{name}{i}.npz") for i in range(2)]
        for a, b, c in zip(*pair, weights(tmp_path / f"{name}.npz")):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_allclose(a, c, atol=1e-5)


def test_kill_9_during_fit_resumes_at_the_last_finished_epoch(tmp_path):
    backup, log = tmp_path / "backup", tmp_path / "epochs.log"
    crashed = python(RESUMABLE, backup, tmp_path / "never.npz", log, 2)
    assert crashed.returncode == -signal.SIGKILL
    assert not (tmp_path / "never.npz").exists()
    resumed = python(RESUMABLE, backup, tmp_path / "resumed.npz", log, -1)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # Epochs 0, 1 finished, 2 was killed; the rerun starts again at 2.
    assert log.read_text().split() == ["0", "1", "2", "2", "3"]
    straight = python(
        RESUMABLE,
        tmp_path / "other",
        tmp_path / "straight.npz",
        tmp_path / "other.log",
        -1,
    )
    assert straight.returncode == 0, straight.stderr[-3000:]
    for a, b in zip(
        weights(tmp_path / "resumed.npz"), weights(tmp_path / "straight.npz")
    ):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_a_resumed_fit_reads_the_order_and_shifts_of_its_epochs(tmp_path):
    # In one process: a crash at epoch 2, then a fresh model and a fresh
    # pipeline resumed from the backup, as a rerun of the CLI does.
    import keras

    from keras_distill import pipelines
    from keras_distill.app import datasets as data
    from keras_distill.callbacks import ResumableData

    class Crash(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 2 and batch == 1:
                raise RuntimeError("crash")

    def fit(backup, resumable=True, crash=False):
        recorder = ResumableData()
        with recorder:
            d = data.load("digits", batch_size=256, seed=0)
            train = pipelines.shift_augment(d.train, seed=1)
        inputs = keras.Input(d.input_shape)
        flat = keras.layers.Flatten()(inputs)
        init = keras.initializers.GlorotUniform(seed=2)
        model = keras.Model(
            inputs, keras.layers.Dense(10, None, True, init)(flat)
        )
        model.compile(
            keras.optimizers.SGD(0.5),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        callbacks = [keras.callbacks.BackupAndRestore(str(backup))]
        callbacks += [recorder] if resumable else []
        callbacks += [Crash()] if crash else []
        model.fit(
            train, epochs=4, verbose=0, shuffle=False, callbacks=callbacks
        )
        return model.get_weights()

    straight = fit(tmp_path / "a")
    for a, b in zip(straight, fit(tmp_path / "b", resumable=False)):
        np.testing.assert_array_equal(a, b)  # the same when not resumed
    for resumable in (True, False):
        backup = tmp_path / f"resumed_{resumable}"
        with pytest.raises(RuntimeError, match="crash"):
            fit(backup, resumable, crash=True)
        resumed = fit(backup, resumable)
        close = all(
            np.allclose(a, b, rtol=0, atol=1e-6)
            for a, b in zip(straight, resumed)
        )
        # Without the callback the resumed epochs 2 and 3 reread the
        # order and shifts of epochs 0 and 1.
        assert close == resumable


def test_two_seeded_runs_give_bit_identical_weights(tmp_path):
    for name in ("a", "b"):
        result = python(SEEDED, tmp_path / f"{name}.npz")
        assert result.returncode == 0, result.stderr[-3000:]
    a, b = weights(tmp_path / "a.npz"), weights(tmp_path / "b.npz")
    assert len(a) == 4
    for x, y in zip(a, b):
        assert x.tobytes() == y.tobytes()
