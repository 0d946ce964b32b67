"""Deep mutual learning: `MutualLearning` and its `mutual_loss`."""

import keras
from keras import ops

from keras_distill import _defaults as defaults
from keras_distill._validation import check_positive
from keras_distill.distribute import MultiWorkerBuild
from keras_distill.distribute import multi_worker_logs
from keras_distill.distribute import replica_share
from keras_distill.losses.base import keras_loss_mean
from keras_distill.losses.logits import soft_kl
from keras_distill.recipes._generations import _sparse_ce


def mutual_loss(logits, labels, temperature=1.0, loss_fn=None):
    """Each model's deep-mutual-learning loss, from all models' logits.

    Formula:

    ```
    loss_i = CE(y, s_i) + 1/(K-1) · Σ_{j≠i} T² · KL(softmax(s_j/T) ||
                                                 softmax(s_i/T))
    ```

    with the other models' predictions treated as constants (no gradient
    flows into them through model i's loss).

    Args:
        logits: A list of K ≥ 2 tensors `(batch, classes)`.
        labels: The labels.
        temperature: Positive float. Defaults to 1.0 (the paper's).
        loss_fn: The supervised loss; defaults to sparse categorical
            cross-entropy on logits.

    Returns:
        A list of K float32 scalars.
    """
    loss_fn = loss_fn or _sparse_ce()
    k = len(logits)
    out = []
    for i, s in enumerate(logits):
        kl = ops.zeros((), "float32")
        for j, t in enumerate(logits):
            if j != i:
                kl = kl + soft_kl(ops.stop_gradient(t), s, temperature)
        supervised = keras_loss_mean(loss_fn, labels, s)
        out.append(supervised + kl / (k - 1))
    return out


@keras.saving.register_keras_serializable(package="keras_distill")
class MutualLearning(MultiWorkerBuild, keras.Model):
    """Deep mutual learning: K students trained together.

    Each step runs every model on the batch; model i minimises its
    supervised loss plus the mean over the other models of the KL
    divergence from their (detached) predictions to its own
    (`mutual_loss`). `fit` trains them all at once; the logs hold `loss`
    (the sum), `<name>_loss` and `<name>_<metric>` for each model. Every
    model stays a standalone `keras.Model`: export `mutual.models[i]`.

    `call` (and so `predict`) returns the first model's output. Create and
    compile it in a `tf.distribute` strategy's scope to train on several
    devices or workers; every term is scaled for the replicas.

    Args:
        models: A list of at least two built `keras.Model`s with distinct
            names and the same inputs and classes.
        temperature: Positive float for the KL terms. Defaults to 1.0.
        name: The model's name. Defaults to `"mutual_learning"`.
        **kwargs: Passed on to `keras.Model`.

    Raises:
        ValueError: If fewer than two models, or repeated names.

    Example:

    ```python
    mutual = keras_distill.recipes.MutualLearning([student_a, student_b])
    mutual.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    mutual.fit(train_ds, epochs=10)
    student_a.save("student_a.keras")
    ```
    """

    def __init__(
        self,
        models,
        temperature=defaults.MUTUAL["temperature"],
        name="mutual_learning",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if (
            not isinstance(models, (list, tuple))
            or len(models) < 2
            or not all(isinstance(m, keras.Model) for m in models)
        ):
            raise ValueError(
                "Invalid value for argument `models`. Expected a list of at "
                f"least two `keras.Model`s. Received: models={models!r}"
            )
        names = [m.name for m in models]
        if len(set(names)) != len(names):
            raise ValueError(
                "Invalid value for argument `models`. Expected distinct "
                f"model names (they name the logs). Received: {names}"
            )
        self.models = list(models)
        self.temperature = check_positive("temperature", temperature)
        self._loss_trackers = [
            keras.metrics.Mean(name=f"{m.name}_loss") for m in self.models
        ]
        self._model_metrics = [[] for _ in self.models]
        self.built = True

    def compile(self, optimizer="adam", loss=None, metrics=None, **kwargs):
        """Configures training: one optimizer for every model.

        Args:
            optimizer: Optimizer name or instance.
            loss: The supervised loss of every model. Defaults to sparse
                categorical cross-entropy on logits.
            metrics: Metric names or instances, computed for each model
                (instances are cloned per model).
            **kwargs: Other `keras.Model.compile` arguments.
        """
        self._supervised = keras.losses.get(loss) if loss else _sparse_ce()
        self._model_metrics = []
        for model in self.models:
            made = []
            for metric in metrics or []:
                if isinstance(metric, str):
                    made.append(_named_metric(metric, model.name))
                else:
                    config = metric.get_config()
                    config["name"] = f"{model.name}_{config['name']}"
                    made.append(type(metric).from_config(config))
            self._model_metrics.append(made)
        super().compile(optimizer=optimizer, **kwargs)

    @property
    def metrics(self):
        return list(self._loss_trackers) + [
            m for made in self._model_metrics for m in made
        ]

    def call(self, inputs, training=None):
        return self.models[0](inputs, training=training)

    def _step(self, data, training):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        logits = [m(x, training=training) for m in self.models]
        losses = mutual_loss(logits, y, self.temperature, self._supervised)
        return x, y, logits, losses

    def _logs(self, y, logits, losses):
        for tracker, value in zip(self._loss_trackers, losses):
            tracker.update_state(value)
        for made, s in zip(self._model_metrics, logits):
            for metric in made:
                metric.update_state(y, s)
        logs = {m.name: m.result() for m in self.metrics}
        logs["loss"] = sum(t.result() for t in self._loss_trackers)
        return logs

    def train_step(self, data):
        import tensorflow as tf

        with tf.GradientTape() as tape:
            _, y, logits, losses = self._step(data, training=True)
            total = ops.sum(ops.stack(losses))
            regularization = [
                ops.sum(ops.cast(r, "float32"))
                for m in self.models
                for r in m.losses
            ]
            if regularization:
                total = total + ops.sum(ops.stack(regularization))
            scaled = self.optimizer.scale_loss(replica_share(total))
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        return multi_worker_logs(self._logs(y, logits, losses))

    def test_step(self, data):
        _, y, logits, losses = self._step(data, training=False)
        return multi_worker_logs(self._logs(y, logits, losses))

    def get_config(self):
        """The models and the temperature."""
        return {
            "models": [
                keras.saving.serialize_keras_object(m) for m in self.models
            ],
            "temperature": self.temperature,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """Builds the recipe from the dict `get_config` returned."""
        config = dict(config)
        config["models"] = [
            keras.saving.deserialize_keras_object(
                m, custom_objects=custom_objects
            )
            for m in config["models"]
        ]
        return cls(**config)


def _named_metric(name, prefix):
    """A metric from its name, for sparse labels and logits outputs."""
    if name in ("accuracy", "acc"):
        return keras.metrics.SparseCategoricalAccuracy(
            name=f"{prefix}_accuracy"
        )
    metric = keras.metrics.get(name)
    if isinstance(metric, keras.metrics.Metric):
        config = metric.get_config()
        config["name"] = f"{prefix}_{config['name']}"
        return type(metric).from_config(config)
    return keras.metrics.MeanMetricWrapper(metric, name=f"{prefix}_{name}")
