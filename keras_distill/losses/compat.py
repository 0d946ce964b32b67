"""Accepting the losses of `keras.distillation` unchanged."""

import keras

from keras_distill.losses.base import DistillationLoss
from keras_distill.losses.logits import LogitsDistillation

_KL_NAMES = ("kl_divergence", "kld", "kullback_leibler_divergence")


def is_keras_distillation_loss(obj):
    """Whether `obj` is a `keras.distillation.DistillationLoss`."""
    base = getattr(getattr(keras, "distillation", None), "DistillationLoss")
    return base is not None and isinstance(obj, base)


def from_keras(loss):
    """Converts a `keras.distillation` loss into one of ours.

    A `keras.distillation.LogitsDistillation` with its default KL loss
    becomes `keras_distill.losses.LogitsDistillation` with the same
    temperature: the same intent, computed correctly (Keras' version passes
    the scaled logits to its KL loss without a softmax in some versions and
    never multiplies by T²). Any other `keras.distillation` loss is wrapped
    in `KerasDistillationLoss`, which calls its `compute_loss`.

    Args:
        loss: A `keras.distillation.DistillationLoss` instance.

    Returns:
        A `keras_distill.losses.DistillationLoss`.

    Example:

    >>> ours = keras_distill.losses.from_keras(
    ...     keras.distillation.LogitsDistillation(temperature=3.0))
    >>> ours.temperature
    3.0
    """
    if isinstance(loss, keras.distillation.LogitsDistillation):
        if is_kl_divergence(loss.loss):
            return LogitsDistillation(temperature=loss.temperature)
    return KerasDistillationLoss(loss)


def is_kl_divergence(loss):
    """Whether `loss` is Keras' KL divergence (name, function or instance)."""
    if isinstance(loss, keras.losses.KLDivergence):
        return True
    if isinstance(loss, str):
        return loss.lower() in _KL_NAMES
    return getattr(loss, "__name__", None) in _KL_NAMES


@keras.saving.register_keras_serializable(package="keras_distill")
class KerasDistillationLoss(DistillationLoss):
    """Wraps any `keras.distillation.DistillationLoss`.

    The wrapped loss' `compute_loss(teacher_outputs, student_outputs)` is
    called on the outputs of the layers its `teacher_layer_name` and
    `student_layer_name` name (the final outputs when these are `None`),
    extracted in the same single forward pass as every other loss.

    Args:
        loss: A `keras.distillation.DistillationLoss` instance.
        name: Optional name.

    Raises:
        ValueError: If `loss` is not a `keras.distillation.DistillationLoss`.

    Example:

    ```python
    loss = keras_distill.losses.KerasDistillationLoss(
        keras.distillation.FeatureDistillation(
            teacher_layer_name="t_hidden", student_layer_name="s_hidden"
        )
    )
    ```
    """

    def __init__(self, loss, name=None):
        if isinstance(loss, dict):
            loss = keras.saving.deserialize_keras_object(loss)
        if not is_keras_distillation_loss(loss):
            raise ValueError(
                "Invalid value for argument `loss`. Expected a "
                "`keras.distillation.DistillationLoss`. Received: "
                f"loss={loss!r} of type {type(loss).__name__}"
            )
        super().__init__(name=name)
        self.loss = loss
        self.teacher_layer = getattr(loss, "teacher_layer_name", None)
        self.student_layer = getattr(loss, "student_layer_name", None)

    def compute(self, teacher_outputs, student_outputs, y_true=None):
        value = keras.ops.cast(
            self.loss.compute_loss(teacher_outputs, student_outputs), "float32"
        )
        # A `keras.losses.Loss` instance divides its value by the number of
        # replicas; the Distiller scales every distillation term once, so
        # undo Keras' share here to keep one footing.
        inner = [
            fn
            for fn in keras.tree.flatten(getattr(self.loss, "loss", None))
            if fn is not None
        ]
        if inner and all(isinstance(fn, keras.losses.Loss) for fn in inner):
            from keras_distill.distribute import replica_count

            value = value * float(replica_count())
        return value

    def validate_models(self, teacher, student):
        self.loss.validate_model_compatibility(teacher, student)

    def get_config(self):
        return {
            "loss": keras.saving.serialize_keras_object(self.loss),
            "name": self.name,
        }
