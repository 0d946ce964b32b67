"""Losses on the teacher's and the student's final logits."""

import keras
from keras import ops

from keras_distill.losses.base import DistillationLoss
from keras_distill.losses.base import check_positive
from keras_distill.losses.base import register
from keras_distill.losses.base import variable_property


def _batch_mean(per_example):
    """Mean over every axis: the "sum_over_batch_size" reduction."""
    return ops.mean(per_example)


def soft_kl(teacher_logits, student_logits, temperature):
    """Temperature-scaled KL divergence from logits, times T².

    Formula:

    ```
    p_t = softmax(teacher_logits / T)
    loss = T² · Σ_c p_t (log_softmax(teacher_logits / T)
                         - log_softmax(student_logits / T))
    ```

    summed over the last (class) axis and averaged over every other axis.
    Computed in float32 from log-softmax, never from the log of clipped
    probabilities, so it is exact for confident teachers and under mixed
    precision.

    Args:
        teacher_logits: Tensor `(batch, ..., classes)`.
        student_logits: Tensor of the same shape.
        temperature: Positive scalar (float or float32 variable).

    Returns:
        A float32 scalar.
    """
    t = ops.cast(temperature, "float32")
    log_p_t = ops.log_softmax(ops.cast(teacher_logits, "float32") / t, axis=-1)
    log_p_s = ops.log_softmax(ops.cast(student_logits, "float32") / t, axis=-1)
    per_example = ops.sum(ops.exp(log_p_t) * (log_p_t - log_p_s), axis=-1)
    return _batch_mean(per_example) * t * t


@keras.saving.register_keras_serializable(package="keras_distill")
@register("kd", "logits", "hinton", "logits_distillation")
class LogitsDistillation(DistillationLoss):
    """Hinton's knowledge distillation loss on logits.

    The KL divergence from the teacher's softened distribution to the
    student's, multiplied by T² so that its gradients keep the same size as
    the supervised loss' when T changes (Hinton et al., 2015).

    Formula:

    ```
    loss = T² · mean_batch Σ_c softmax(t/T)_c
                (log_softmax(t/T)_c - log_softmax(s/T)_c)
    ```

    with `t` the teacher's logits and `s` the student's. Both models must
    output logits (no softmax) with the same number of classes. Unlike
    `keras.distillation.LogitsDistillation` with its default string loss,
    the softmax and the T² factor are always applied.

    The temperature is a variable once the loss is attached to a
    `keras_distill.Distiller`: set `loss.temperature = 8.0` (or
    `distiller.temperature = 8.0`) from a callback and the next step uses it,
    without recompiling.

    Args:
        temperature: Positive float, the softmax temperature T. Defaults to
            4.0.
        name: Optional name, used for the loss' variables.

    Raises:
        ValueError: If `temperature` is not a positive number.

    Example:

    ```python
    loss = keras_distill.losses.LogitsDistillation(temperature=4.0)
    value = loss(teacher_logits, student_logits)
    ```
    """

    variables = ("temperature",)
    needs_logits = True
    temperature = variable_property(
        "temperature", check_positive("temperature")
    )

    def __init__(self, temperature=4.0, name=None):
        super().__init__(name=name)
        self.temperature = temperature

    def compute(self, teacher_outputs, student_outputs, y_true=None):
        return soft_kl(
            teacher_outputs, student_outputs, self.variable("temperature")
        )


@keras.saving.register_keras_serializable(package="keras_distill")
@register("soft_target", "soft_target_distillation")
class SoftTargetDistillation(DistillationLoss):
    """Any Keras loss applied to the softened distributions, times T².

    This is the keras.io Distiller example's form:
    `loss_fn(softmax(t/T), softmax(s/T)) · T²`. With
    `loss=keras.losses.KLDivergence()` it equals `LogitsDistillation`, which
    is preferred (it works from log-softmax and is exact for confident
    teachers); use this class for other probability losses, for example
    `keras.losses.CategoricalCrossentropy()`.

    Args:
        loss: A Keras loss (name, instance or function) called as
            `loss(teacher_probabilities, student_probabilities)`. Defaults to
            `"kl_divergence"`.
        temperature: Positive float, the softmax temperature T. Defaults to
            4.0.
        name: Optional name, used for the loss' variables.

    Raises:
        ValueError: If `temperature` is not a positive number or `loss` is
            not a known Keras loss.

    Example:

    ```python
    loss = keras_distill.losses.SoftTargetDistillation(
        loss="categorical_crossentropy", temperature=2.0
    )
    ```
    """

    variables = ("temperature",)
    needs_logits = True
    temperature = variable_property(
        "temperature", check_positive("temperature")
    )

    def __init__(self, loss="kl_divergence", temperature=4.0, name=None):
        super().__init__(name=name)
        self.loss = loss
        self._loss_fn = keras.losses.get(loss)
        if self._loss_fn is None:
            raise ValueError(
                "Invalid value for argument `loss`. Expected a Keras loss "
                f"name, instance or function. Received: loss={loss!r}"
            )
        self.temperature = temperature

    def compute(self, teacher_outputs, student_outputs, y_true=None):
        t = ops.cast(self.variable("temperature"), "float32")
        p_t = ops.softmax(ops.cast(teacher_outputs, "float32") / t, axis=-1)
        p_s = ops.softmax(ops.cast(student_outputs, "float32") / t, axis=-1)
        value = ops.cast(self._loss_fn(p_t, p_s), "float32")
        return _batch_mean(value) * t * t

    def get_config(self):
        config = super().get_config()
        config["loss"] = keras.losses.serialize(self._loss_fn)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["loss"] = keras.losses.deserialize(config["loss"])
        return cls(**config)
