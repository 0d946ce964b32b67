"""Shared helpers for the test suite: tiny models and data."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def _import_tensorflow_quietly():
    """TensorFlow's C++ start-up lines go to fd 2 before its log level
    applies; pytest would print them after the summary line."""
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


_import_tensorflow_quietly()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Tests that use `keras.distillation` itself (the compatibility layer's
# other side) need Keras 3.12 or later.
needs_keras_distillation = pytest.mark.skipif(
    not hasattr(keras, "distillation"),
    reason="keras.distillation was added in Keras 3.12; this is Keras "
    f"{keras.version()}",
)

NUM_FEATURES = 6
NUM_CLASSES = 3


@keras.saving.register_keras_serializable(package="keras_distill_tests")
class CallCounter(keras.layers.Layer):
    """Identity layer that counts how many times its graph runs."""

    def build(self, input_shape):
        self.count = self.add_weight(
            shape=(), initializer="zeros", trainable=False, dtype="float32"
        )

    def call(self, inputs):
        self.count.assign_add(1.0)
        return inputs


def mlp(hidden, name, counter=False, seed=0, batchnorm=False):
    """A functional MLP: NUM_FEATURES inputs, NUM_CLASSES logits."""
    init = keras.initializers.GlorotUniform(seed=seed)
    inputs = keras.Input((NUM_FEATURES,), name=f"{name}_in")
    h = inputs
    if counter:
        h = CallCounter(name=f"{name}_counter")(h)
    h = keras.layers.Dense(
        hidden, activation="relu", kernel_initializer=init, name=f"{name}_h"
    )(h)
    if batchnorm:
        h = keras.layers.BatchNormalization(name=f"{name}_bn")(h)
    outputs = keras.layers.Dense(
        NUM_CLASSES, kernel_initializer=init, name=f"{name}_logits"
    )(h)
    return keras.Model(inputs, outputs, name=name)


def copy_model(model):
    """A new model with the same config and the same weights."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def data(n=48, seed=0):
    """Separable-ish random features and integer labels."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, NUM_FEATURES)).astype("float32")
    w = rng.normal(size=(NUM_FEATURES, NUM_CLASSES))
    y = np.argmax(x @ w, axis=-1).astype("int32")
    return x, y


def sparse_ce():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(autouse=True)
def _seed_and_clear():
    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session()


def np_log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def np_ce(logits, y):
    """NumPy reference: sparse cross-entropy from logits, per example."""
    return -np_log_softmax(np.asarray(logits, np.float64))[np.arange(len(y)), y]


def np_kd(teacher_logits, student_logits, temperature):
    """NumPy reference: T² · mean_batch Σ p_t (log p_t − log p_s)."""
    t = np.asarray(teacher_logits, np.float64) / temperature
    s = np.asarray(student_logits, np.float64) / temperature
    log_pt, log_ps = np_log_softmax(t), np_log_softmax(s)
    kl = (np.exp(log_pt) * (log_pt - log_ps)).sum(axis=-1)
    return temperature**2 * kl.mean()


__all__ = ["tf"]


def pytest_collection_modifyitems(items):
    """Marks every test under `tests/integration/` as `integration` (the
    subprocess, saved-file and TFLite round trips; still in the default
    run, and `-m "not integration"` leaves them out)."""
    for item in items:
        if "integration" in item.path.parent.name:
            item.add_marker(pytest.mark.integration)
