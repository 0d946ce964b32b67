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

    summed over the last (class) axis and averaged over every other axis,
    in float32 whatever the inputs' dtype.

    At high temperatures the two log-softmax terms nearly cancel, and the
    T² factor then multiplies their float32 rounding error (about 1e-4
    relative at T = 100). This function avoids that cancellation. With
    `d = (t - s) / T` and `e = d - Σ p_t d`, the divergence is exactly
    `KL = log Σ p_t exp(-e) = log1p(Σ p_t φ(e) - Σ p_t e)` where
    `φ(e) = exp(-e) - 1 + e` is taken from its Taylor series for small
    `|e|`; the first form is used where KL > 0.1 (no cancellation there,
    and it cannot overflow), the second below. Both stay near float32
    precision at any temperature and for saturated (one-hot) teachers.

    Args:
        teacher_logits: Tensor `(batch, ..., classes)`.
        student_logits: Tensor of the same shape.
        temperature: Positive scalar (float or float32 variable).

    Returns:
        A float32 scalar.
    """
    t = ops.cast(temperature, "float32")
    teacher = ops.cast(teacher_logits, "float32")
    student = ops.cast(student_logits, "float32")
    log_p_t = ops.log_softmax(teacher / t, axis=-1)
    p_t = ops.exp(log_p_t)
    d = (teacher - student) / t
    e = d - ops.sum(p_t * d, axis=-1, keepdims=True)
    # log p_t(c) - e(c): its log-sum-exp is the KL divergence.
    x = log_p_t - e
    kl_large = ops.logsumexp(x, axis=-1)
    small = ops.abs(e) < 0.25
    es = ops.where(small, e, ops.zeros_like(e))
    series = (
        es
        * es
        * (
            1 / 2
            + es * (-1 / 6 + es * (1 / 24 + es * (-1 / 120 + es * (1 / 720))))
        )
    )
    # p_t · φ(e), computed as exp(log p_t - e) - p_t + p_t · e off the series.
    direct = ops.exp(ops.minimum(x, 60.0)) - p_t + p_t * e
    p_phi = ops.where(small, p_t * series, direct)
    kl_small = ops.log1p(
        ops.maximum(ops.sum(p_phi, axis=-1) - ops.sum(p_t * e, axis=-1), 0.0)
    )
    per_example = ops.where(kl_large > 0.1, kl_large, kl_small)
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
