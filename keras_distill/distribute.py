"""Training under `tf.distribute.MultiWorkerMirroredStrategy`.

Keras 3's `fit` fails under MultiWorkerMirroredStrategy for every model
(keras-team/keras#20585): it reduces the first distributed batch to learn
its shapes, and reduces each logged scalar along an axis it does not have.
`keras_distill.Distiller` carries the fix itself; `MultiWorkerModel` gives
it to any other model (a teacher, a student trained from scratch).
"""

import keras
from keras import ops

from keras_distill import _keras_internals as internals


def replica_count():
    """The number of replicas in sync under the current strategy (1 outside
    one)."""
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def replica_share(value):
    """A per-replica mean as this replica's share of the global-batch mean.

    Gradients are summed over replicas, so each replica contributes its
    local mean divided by the replica count. Keras applies this inside
    `keras.losses.Loss.__call__`; a term computed with `keras.ops` directly
    needs it here, so that every term is on one footing. The one place
    keras_distill scales for replicas (the `Distiller`, `MutualLearning`
    and the `keras.distillation` wrapper all call it).

    Args:
        value: A scalar tensor, a mean over this replica's examples.

    Returns:
        `value / replicas` (`value` itself on one device).
    """
    replicas = replica_count()
    if replicas > 1:
        value = value * (1.0 / replicas)
    return value


def in_multi_worker_mode(strategy=None):
    """Whether `strategy` (default: the current one) spans several workers.

    Args:
        strategy: A `tf.distribute.Strategy`, or None for the current one.

    Returns:
        True under a `MultiWorkerMirroredStrategy` with more than one
        worker in its cluster.
    """
    import tensorflow as tf

    strategy = strategy or tf.distribute.get_strategy()
    extended = getattr(strategy, "extended", None)
    return isinstance(
        strategy, tf.distribute.MultiWorkerMirroredStrategy
    ) and bool(getattr(extended, "_in_multi_worker_mode", lambda: False)())


def multi_worker_logs(logs):
    """A train or test step's logs, shaped so that Keras can reduce them.

    Under a multi-worker strategy Keras reduces each logged value with
    `strategy.reduce("MEAN", value, axis=0)`, which fails for scalars; a
    value of shape (1,) reduces to the mean over the replicas, a scalar.
    Elsewhere the logs are returned unchanged.

    Args:
        logs: A dict of scalar tensors.

    Returns:
        The logs, reshaped to (1,) under a multi-worker strategy.
    """
    if in_multi_worker_mode():
        return {k: ops.reshape(v, (1,)) for k, v in logs.items()}
    return logs


def symbolic_build(model, build, iterator=None, data_batch=None):
    """Keras' symbolic build from one replica's batch, not a reduction.

    Keras learns the structure of a batch by reducing the first
    distributed batch to its mean, which a multi-worker strategy cannot do
    eagerly. One replica's part of the batch has the same structure.

    Args:
        model: The `keras.Model` being built.
        build: Keras' own `_maybe_symbolic_build`, bound to `model`.
        iterator: Keras' epoch iterator, or None.
        data_batch: A batch, when Keras passes one instead.

    Returns:
        What `build` returns.
    """
    strategy = internals.distribute_strategy_or_none(model)
    if iterator is not None and strategy is not None:
        import tensorflow as tf

        batch = None
        for _, _, it in iterator:
            batch = next(it)
            break

        def local(value):
            if isinstance(value, tf.distribute.DistributedValues):
                strategy = model.distribute_strategy
                return strategy.experimental_local_results(value)[0]
            return value

        return build(data_batch=keras.tree.map_structure(local, batch))
    return build(iterator=iterator, data_batch=data_batch)


class MultiWorkerBuild:
    """Mixin for a `keras.Model`: its `fit` builds under multi-worker too.

    Replaces Keras' symbolic build from a reduced batch by `symbolic_build`
    (one replica's batch). Put it before `keras.Model` in the bases.
    """

    # Overrides Keras' private hook `internals.SYMBOLIC_BUILD` (tested in
    # tests/test_keras_internals.py).
    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        build = getattr(super(), internals.SYMBOLIC_BUILD)
        return symbolic_build(self, build, iterator, data_batch)


@keras.saving.register_keras_serializable(package="keras_distill")
class MultiWorkerModel(MultiWorkerBuild, keras.Model):
    """Wraps a model so that `fit` and `evaluate` work on many workers.

    Create and compile the wrapper in the strategy's scope (the wrapped
    model too), train it, and keep using the wrapped model, whose weights
    it trains: save `wrapper.model`, not the wrapper. On one worker, or
    under any other strategy, it trains exactly as the model itself would.

    Args:
        model: The `keras.Model` to train.
        **kwargs: Passed on to `keras.Model`.

    Example:

    ```python
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        teacher = make_teacher()
        trainer = keras_distill.distribute.MultiWorkerModel(teacher)
        trainer.compile("adam", loss, metrics=["accuracy"])
    trainer.fit(train_ds, epochs=10)
    teacher.save("teacher.keras")
    ```
    """

    def __init__(self, model, **kwargs):
        if not isinstance(model, keras.Model):
            raise ValueError(
                "Invalid value for argument `model`. Expected a "
                f"`keras.Model`. Received: model={model!r} of type "
                f"{type(model).__name__}"
            )
        kwargs.setdefault("name", f"{model.name}_multi_worker")
        super().__init__(**kwargs)
        self.model = model
        if hasattr(model, "output_names"):
            self.output_names = model.output_names
        self.built = model.built

    def call(self, inputs, training=None):
        return self.model(inputs, training=training)

    def train_step(self, data):
        return multi_worker_logs(super().train_step(data))

    def test_step(self, data):
        return multi_worker_logs(super().test_step(data))

    def get_config(self):
        """The wrapped model's config."""
        return {
            "model": keras.saving.serialize_keras_object(self.model),
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """Builds the wrapper from the dict `get_config` returned."""
        config = dict(config)
        config["model"] = keras.saving.deserialize_keras_object(
            config["model"], custom_objects=custom_objects
        )
        return cls(**config)
