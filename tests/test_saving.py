"""Saved distillers reload in a fresh Python process after `import
keras_distill` alone, with every kind of registered part, and go on
training from their optimizer state."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from conftest import data
from conftest import mlp
from conftest import sparse_ce

import keras_distill
from keras_distill import losses

pytestmark = pytest.mark.integration

RELOAD = textwrap.dedent(
    """
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np
    import keras
    import keras_distill  # the only import: it must register everything

    folder = sys.argv[1]
    x = np.load(os.path.join(folder, "x.npy"))
    y = np.load(os.path.join(folder, "y.npy"))
    for name in ("everything", "checkpoint"):
        model = keras.models.load_model(os.path.join(folder, name + ".keras"))
        assert isinstance(model, keras_distill.Distiller), type(model)
        np.save(os.path.join(folder, name + "_pred.npy"),
                model.predict(x, verbose=0))
    plain = keras.models.load_model(os.path.join(folder, "plain.keras"))
    plain.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    np.savez(os.path.join(folder, "continued.npz"),
             *plain.student.get_weights())
    everything = keras.models.load_model(
        os.path.join(folder, "everything.keras"))
    history = everything.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    """
)


def _everything():
    """A distiller with every kind of registered part."""
    teacher = keras_distill.teachers.Ensemble(
        [mlp(8, "teacher_a", seed=1), mlp(8, "teacher_b", seed=3)],
        temperature=2.0,
    )
    return keras_distill.Distiller(
        teacher,
        mlp(4, "student", seed=2),
        [
            losses.DKD(warmup_epochs=2),
            losses.LogitsDistillation(2.0),
        ],
        augment=keras_distill.augment.ConsistentAugment(
            [keras_distill.augment.Mixup(alpha=0.4)]
        ),
    )


def _plain():
    """DKD with a learned feature adapter, Adam: deterministic to go on."""
    return keras_distill.Distiller(
        mlp(8, "teacher", seed=1),
        mlp(4, "student", seed=2),
        [
            losses.DKD(warmup_epochs=0),
            losses.FeatureDistillation("teacher_h", "student_h"),
        ],
        student_loss_weight=0.3,
    )


@pytest.mark.integration
def test_reload_in_a_fresh_process(tmp_path):
    x, y = data(32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)

    everything = _everything()
    everything.compile("adam", sparse_ce(), metrics=["accuracy"])
    everything.fit(
        x,
        y,
        batch_size=8,
        epochs=1,
        verbose=0,
        callbacks=[
            keras.callbacks.ModelCheckpoint(
                str(tmp_path / "checkpoint.keras"),
                monitor="loss",
                save_best_only=True,
            )
        ],
    )
    everything.save(tmp_path / "everything.keras")

    plain = _plain()
    assert plain.distillation_losses[1].layers  # the adapter exists
    plain.compile(keras.optimizers.Adam(0.01), sparse_ce())
    plain.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    plain.save(tmp_path / "plain.keras")
    plain.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)

    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    result = subprocess.run(
        [sys.executable, "-c", RELOAD, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    expected = everything.predict(x, verbose=0)
    for name in ("everything", "checkpoint"):
        np.testing.assert_allclose(
            np.load(tmp_path / f"{name}_pred.npy"), expected, atol=1e-6
        )
    with np.load(tmp_path / "continued.npz") as continued:
        reloaded = [continued[f"arr_{i}"] for i in range(len(continued))]
    # The same next epoch: Adam's moments and step came back with the file.
    for a, b in zip(plain.student.get_weights(), reloaded):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_a_reset_optimizer_would_be_seen():
    """The continued-training check can fail: a fresh Adam differs."""
    x, y = data(32)
    weights = []
    for fresh in (False, True):
        keras.utils.set_random_seed(0)
        plain = _plain()
        plain.compile(keras.optimizers.Adam(0.01), sparse_ce())
        plain.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        if fresh:
            plain.compile(keras.optimizers.Adam(0.01), sparse_ce())
        plain.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        weights.append(plain.student.get_weights()[0])
    assert np.abs(weights[0] - weights[1]).max() > 1e-4
