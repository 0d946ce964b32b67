"""Magnitude pruning: the schedule, the sparsity reached per layer, masks
that hold through fit, saving in a fresh process and TFLite, and errors."""

import gzip
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import data
from conftest import mlp
from conftest import sparse_ce

import keras_distill
from keras_distill import prune


def test_polynomial_schedule_is_zhu_and_gupta():
    final, begin, end = 0.8, 10, 110
    assert prune.polynomial_sparsity(5, final, 0.1, begin, end) == 0.0
    assert prune.polynomial_sparsity(10, final, 0.1, begin, end) == 0.1
    for step in (35, 60, 90):
        expected = final + (0.1 - final) * (1 - (step - begin) / 100) ** 3
        assert prune.polynomial_sparsity(step, final, 0.1, begin, end) == (
            pytest.approx(expected)
        )
    assert prune.polynomial_sparsity(500, final, 0.1, begin, end) == final


def test_magnitude_mask_keeps_the_largest_weights():
    values = np.array([[0.1, -3.0, 0.5], [2.0, -0.05, 1.0]])
    mask = prune.magnitude_mask(values, 0.5)
    np.testing.assert_array_equal(mask, [[0, 1, 0], [1, 0, 1]])


@pytest.fixture(scope="module")
def pruned():
    """An MLP fine-tuned while pruned to 75%, with its pruner."""
    x, y = data(96)
    model = mlp(16, "pruned", seed=3)
    model.compile("adam", sparse_ce())
    pruner = prune.Pruner(0.75, begin_step=0, end_step=12, frequency=3)
    model.fit(x, y, batch_size=16, epochs=4, verbose=0, callbacks=[pruner])
    return prune.strip(model, pruner), pruner, x


def test_each_layer_reaches_the_target_sparsity(pruned):
    model, _, _ = pruned
    reached = prune.sparsity(model)
    assert len(reached) == 2
    for path, value in reached.items():
        assert abs(value - 0.75) <= 0.01, path


def test_masks_hold_through_more_training(pruned):
    model, pruner, x = pruned
    zeros = [
        keras.ops.convert_to_numpy(k) == 0
        for k in prune.prunable_kernels(model)
    ]
    y = np.zeros(len(x), "int32")
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[pruner])
    for kernel, zero in zip(prune.prunable_kernels(model), zeros):
        assert np.all(keras.ops.convert_to_numpy(kernel)[zero] == 0)
    # Without the pruner an optimizer step would revive them.
    assert pruner.current_sparsity() == 0.75


def test_the_stripped_model_predicts_as_the_masked_one(pruned):
    model, pruner, x = pruned
    kernels = prune.prunable_kernels(model)
    masked = [
        keras.ops.convert_to_numpy(k) * m for k, m in zip(kernels, pruner.masks)
    ]
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    for kernel, value in zip(prune.prunable_kernels(twin), masked):
        kernel.assign(value)
    np.testing.assert_allclose(
        model.predict(x, verbose=0), twin.predict(x, verbose=0), atol=1e-6
    )
    assert type(prune.strip(model, pruner)) is type(model)  # a plain model


LOAD = """
import sys
import numpy as np
import keras
import keras_distill
model = keras.models.load_model(sys.argv[1])
print(min(keras_distill.prune.sparsity(model).values()))
"""


@pytest.mark.integration
def test_zeros_survive_saving_in_a_fresh_process_and_tflite(pruned, tmp_path):
    model, _, x = pruned
    path = tmp_path / "pruned.keras"
    model.save(path)
    result = subprocess.run(
        [sys.executable, "-c", LOAD, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert abs(float(result.stdout.split()[-1]) - 0.75) <= 0.01
    report = keras_distill.export.tflite(
        model, tmp_path / "pruned.tflite", check_data=x[:8], latency_runs=1
    )
    assert report.max_abs_diff < 1e-5
    # The zeros are in the file: a wider model pruned to 75% compresses to
    # well under its dense twin's size.
    wide = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(96), keras.layers.Dense(96)]
    )
    dense = keras.models.clone_model(wide)
    dense.set_weights(wide.get_weights())
    pruner = prune.Pruner(0.75, end_step=1, frequency=1, target=wide)
    pruner.set_model(wide)
    pruner.on_train_begin()
    pruner.on_train_batch_end(0)
    assert min(prune.sparsity(wide).values()) >= 0.74
    sizes = []
    for name, m in (("wide", wide), ("dense", dense)):
        path = tmp_path / f"{name}.tflite"
        keras_distill.export.tflite(m, path, check_data=x[:4], latency_runs=1)
        sizes.append(len(gzip.compress(path.read_bytes())))
    assert sizes[0] < 0.5 * sizes[1], sizes


def test_a_student_pruned_while_distilled():
    x, y = data(64)
    teacher = mlp(16, "teacher_p", seed=1)
    student = mlp(16, "student_p", seed=2)
    distiller = keras_distill.Distiller(teacher, student)
    distiller.compile("adam", sparse_ce())
    pruner = prune.Pruner(0.5, end_step=8, frequency=2, target=student)
    distiller.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[pruner])
    for value in prune.sparsity(student).values():
        assert abs(value - 0.5) <= 0.01
    assert min(prune.sparsity(teacher).values()) < 0.01  # never pruned


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(sparsity=1.0), r"Expected a sparsity in \[0, 1\)"),
        (dict(sparsity=-0.1), "Received: sparsity=-0.1"),
        (dict(sparsity=0.5, begin_step=10, end_step=10), "end_step > "),
        (dict(sparsity=0.5, frequency=0), "frequency"),
    ],
)
def test_bad_sparsity_or_schedule(kwargs, match):
    with pytest.raises(ValueError, match=match):
        prune.Pruner(**kwargs)


def test_an_unbuilt_sequential_is_pruned_once_its_first_step_builds_it():
    x, y = data(64)
    model = keras.Sequential(
        [keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)]
    )
    model.compile("adam", sparse_ce())
    pruner = prune.Pruner(0.5, end_step=4, frequency=1)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[pruner])
    reached = prune.sparsity(prune.strip(model, pruner))
    assert len(reached) == 2
    assert all(abs(v - 0.5) <= 0.01 for v in reached.values())
    with pytest.raises(ValueError, match="Expected Dense, Conv or Embedding"):
        flat = keras.Sequential([keras.Input((3,)), keras.layers.Flatten()])
        flat.compile("sgd", "mse")
        flat.fit(
            np.zeros((4, 3)),
            np.zeros((4, 3)),
            verbose=0,
            callbacks=[prune.Pruner(0.5, end_step=2)],
        )
