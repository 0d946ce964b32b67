"""Bad input meets a clear error before any graph is traced.

The errors table (`docs/errors.md`) lists every case; the other test files hold
the rest of them (losses, data sources, the cache, the command line).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import NUM_CLASSES
from conftest import data
from conftest import mlp
from conftest import sparse_ce

import keras_distill
from keras_distill import losses
from keras_distill._checks import NonFiniteLossError


def distiller(**compile_kwargs):
    d = keras_distill.Distiller(mlp(8, "teacher"), mlp(4, "student"))
    d.compile(keras.optimizers.SGD(0.1), sparse_ce(), **compile_kwargs)
    return d


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda x, y: (x[:0], y[:0]), r"at least one example"),
        (lambda x, y: (x[:, :5], y), r"Expected inputs of shape \(None, 6\)"),
        (lambda x, y: (np.where(x > 1, np.nan, x), y), "Expected finite"),
        (lambda x, y: (x, y + NUM_CLASSES), r"indices in \[0, 3\)"),
        (lambda x, y: (x, y - 1), "Received: labels from -1"),
        (lambda x, y: (x, y[:-2]), "Expected one label per example"),
        (
            lambda x, y: (x, np.full((len(y), 3), np.inf, "float32")),
            "Expected finite values",
        ),
    ],
    ids=[
        "empty",
        "shape",
        "nan_inputs",
        "labels_too_high",
        "negative_labels",
        "label_count",
        "inf_labels",
    ],
)
def test_bad_arrays_in_fit(make, match):
    d = distiller()
    x, y = make(*data(16))
    with pytest.raises(ValueError, match=match):
        d.fit(x, y, epochs=1, verbose=0)
    assert d.train_function is None  # nothing was traced


def test_bad_arrays_in_evaluate_and_predict():
    d = distiller()
    x, y = data(16)
    with pytest.raises(ValueError, match=r"`evaluate\(\)`.*indices"):
        d.evaluate(x, y + 5, verbose=0)
    with pytest.raises(ValueError, match=r"`predict\(\)`. Expected inputs"):
        d.predict(x[:, :2], verbose=0)


def test_bad_datasets_in_fit():
    d = distiller()
    x, y = data(16)
    empty = tf.data.Dataset.from_tensor_slices((x[:0], y[:0])).batch(4)
    with pytest.raises(ValueError, match="Expected a dataset with at least"):
        d.fit(empty, epochs=1, verbose=0)
    narrow = tf.data.Dataset.from_tensor_slices((x[:, :4], y)).batch(4)
    with pytest.raises(ValueError, match=r"inputs have shape \(None, 4\)"):
        d.fit(narrow, epochs=1, verbose=0)


def test_non_finite_teacher_outputs_stop_training():
    teacher = mlp(8, "teacher")
    kernel = teacher.get_layer("teacher_logits").kernel
    kernel.assign(np.full(kernel.shape, np.nan, "float32"))
    d = keras_distill.Distiller(teacher, mlp(4, "student"))
    d.compile(keras.optimizers.SGD(0.1), sparse_ce())
    x, y = data(16)
    with pytest.raises(NonFiniteLossError, match="distillation_loss is NaN"):
        d.fit(x, y, batch_size=4, epochs=2, verbose=0)
    # The documented alternative trains on, as Keras does.
    d.compile(keras.optimizers.SGD(0.1), sparse_ce(), nan_policy="ignore")
    history = d.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isnan(history.history["loss"][0])
    with pytest.raises(ValueError, match="Received: nan_policy='skip'"):
        d.compile("sgd", sparse_ce(), nan_policy="skip")


def test_teacher_and_student_must_take_the_same_inputs():
    inputs = keras.Input((5,))
    other = keras.Model(inputs, keras.layers.Dense(NUM_CLASSES)(inputs))
    with pytest.raises(ValueError, match="Expected both to take the same"):
        keras_distill.Distiller(other, mlp(4, "student"))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(distillation_losses=[losses.DKD()] * 0), "at least one"),
        (dict(distillation_loss_weights=[1.0, 2.0]), "Expected a list of 1"),
        (dict(distillation_loss_weights=[-1.0]), "non-negative finite"),
        (dict(student_loss_weight="0.5"), r"Expected a float in \[0, 1\]"),
        (dict(distillation_losses=3.5), "Received: distillation_losses=3.5"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        keras_distill.Distiller(mlp(8, "teacher"), mlp(4, "student"), **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(evaluate_distillation="yes"), "Expected a bool"),
        (dict(alpha=1.5), "Received: student_loss_weight=1.5"),
        (dict(temperature=-2), "Received: temperature=-2"),
        (dict(temperature="hot"), "Received: temperature='hot'"),
    ],
)
def test_bad_compile_arguments(kwargs, match):
    d = keras_distill.Distiller(mlp(8, "teacher"), mlp(4, "student"))
    with pytest.raises(ValueError, match=match):
        d.compile("sgd", sparse_ce(), **kwargs)


def test_non_finite_loss_under_xla_stops_at_the_epoch_end():
    # XLA drops the in-graph check; the guard reads the epoch's loss.
    teacher = mlp(8, "teacher")
    kernel = teacher.get_layer("teacher_logits").kernel
    kernel.assign(np.full(kernel.shape, np.inf, "float32"))
    d = keras_distill.Distiller(teacher, mlp(4, "student"))
    d.compile(keras.optimizers.SGD(0.1), sparse_ce(), jit_compile=True)
    x, y = data(16)
    with pytest.raises(NonFiniteLossError, match="epoch 1: distillation_loss"):
        d.fit(x, y, batch_size=8, epochs=3, verbose=0)


def _nan_run(x, y, batches=None):
    """A distiller (BatchNorm student, Adam) fitted on `x` in batches of 8,
    from the same start each time; `batches` keeps the first few."""
    keras.utils.set_random_seed(0)
    d = keras_distill.Distiller(
        mlp(8, "teacher", seed=1), mlp(4, "student", seed=2, batchnorm=True)
    )
    d.compile(keras.optimizers.Adam(0.05), sparse_ce())
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    if batches is not None:
        ds = ds.take(batches)
    return d, ds


def test_a_non_finite_step_changes_no_weight_and_names_the_batch():
    x, y = data(48)
    x[21, 2] = np.nan  # a row of the third batch
    d, ds = _nan_run(x, y)
    with pytest.raises(NonFiniteLossError, match="epoch 1, batch 3:"):
        d.fit(ds, epochs=1, verbose=0)
    good, good_ds = _nan_run(x, y, batches=2)
    good.fit(good_ds, epochs=1, verbose=0)
    student, reference = d.student.weights, good.student.weights
    assert len(student) == 8  # kernels, biases, BatchNorm statistics
    for a, b in zip(student, reference):
        assert a.path == b.path
        np.testing.assert_array_equal(a.numpy(), b.numpy())
        assert np.isfinite(a.numpy()).all()
    assert int(d.optimizer.iterations.numpy()) == 2
    for a, b in zip(d.optimizer.variables, good.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The next epoch's error names its own epoch.
    with pytest.raises(NonFiniteLossError, match="epoch 2, batch 3:"):
        d.fit(ds, epochs=2, initial_epoch=1, verbose=0)
