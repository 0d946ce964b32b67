"""One test per private Keras access (`keras_distill/_keras_internals.py`).

Written against Keras 3.8 (with TensorFlow 2.18, the oldest supported)
through 3.15: a Keras release that renames or changes one of these fails
the test named after it. `.ci/run` runs this file on the oldest versions
too (the `compat` marker).
"""

import keras
import numpy as np
import pytest
from conftest import data
from conftest import mlp
from conftest import sparse_ce

from keras_distill import Distiller
from keras_distill import _keras_internals as internals
from keras_distill.distribute import MultiWorkerBuild

pytestmark = pytest.mark.compat


def test_run_through_graph():
    model = mlp(4, "m")
    assert internals.is_functional(model)
    assert not internals.is_functional(keras.layers.Dense(2))
    x, _ = data(5)
    seen = []

    def call(operation, *args, **kwargs):
        seen.append(operation.name)
        return operation(*args, **kwargs)

    out = internals.run_through_graph(
        model, keras.ops.convert_to_tensor(x), call
    )
    np.testing.assert_allclose(out, model(x), atol=1e-6)
    assert seen == ["m_h", "m_logits"]


def test_functional_graph():
    sequential = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    graph = internals.functional_graph(sequential)
    assert internals.is_functional(graph)
    assert internals.functional_graph(keras.Sequential([])) is None


def test_producing_operation():
    inputs = keras.Input((3,))
    dense = keras.layers.Dense(2, activation="softmax", name="head")
    assert internals.producing_operation(dense(inputs)) is dense
    assert internals.producing_operation(np.zeros(2)) is None


def test_keras_mask():
    embedding = keras.layers.Embedding(5, 2, mask_zero=True)
    out = embedding(np.array([[1, 2, 0]]))
    np.testing.assert_array_equal(
        internals.keras_mask(out), [[True, True, False]]
    )
    assert internals.keras_mask(keras.ops.ones((2,))) is None


def test_build_shapes():
    class Lazy(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    model = Lazy()
    model(np.zeros((2, 4), "float32"))
    shapes = internals.build_shapes(model)
    assert [tuple(s)[1:] for s in shapes.values()] == [(4,)]


def test_compile_loss_loss_tracker_and_compile_options():
    x, y = data(8)
    distiller = Distiller(mlp(8, "teacher", seed=1), mlp(4, "student"))
    assert internals.compile_loss(distiller) is None
    distiller.compile("sgd", sparse_ce(), nan_policy="ignore")
    compiled = internals.compile_loss(distiller)
    expected = sparse_ce()(y, distiller.student(x))
    np.testing.assert_allclose(
        compiled(y, distiller.student(x), None), expected, rtol=1e-6
    )
    tracker = internals.loss_tracker(distiller)
    assert isinstance(tracker, keras.metrics.Mean) and tracker.name == "loss"
    config = distiller.get_compile_config()
    assert config["nan_policy"] == "ignore"
    internals.set_compile_option(distiller, "extra", 1)
    assert distiller.get_compile_config()["extra"] == 1


def test_untrack_variable():
    layer = keras.layers.Layer()
    variable = layer.add_weight(shape=(), initializer="zeros")
    assert len(layer.weights) == 1
    internals.untrack_variable(layer, variable)
    assert layer.weights == []


def test_distribute_strategy_or_none():
    import tensorflow as tf

    assert internals.distribute_strategy_or_none(mlp(2, "plain")) is None
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        model = mlp(2, "scoped")
    assert internals.distribute_strategy_or_none(model) is strategy


def test_symbolic_build_hook():
    assert callable(getattr(keras.Model, internals.SYMBOLIC_BUILD))
    assert internals.SYMBOLIC_BUILD in vars(MultiWorkerBuild)
