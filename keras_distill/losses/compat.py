"""Accepting the losses of `keras.distillation` unchanged.

`keras.distillation` appeared in Keras 3.12 and is optional: on an older
Keras, `import keras_distill` and every loss of our own work as usual, no
object can be a `keras.distillation` loss, and the two features that only
make sense with one (`from_keras` and `KerasDistillationLoss`) raise an
`ImportError` that names the Keras version they need.
"""

import keras

from keras_distill.losses.base import DistillationLoss
from keras_distill.losses.base import is_kl_divergence
from keras_distill.losses.logits import LogitsDistillation
from keras_distill.losses.registry import add_converter

# The first Keras release with `keras.distillation`.
KERAS_DISTILLATION_VERSION = "3.12"


def keras_distillation():
    """The `keras.distillation` module, or None on a Keras without it."""
    return getattr(keras, "distillation", None)


def require_keras_distillation(feature):
    """Returns `keras.distillation`, or says which Keras `feature` needs.

    Args:
        feature: What needs it, for the message (e.g.
            `"keras_distill.losses.from_keras"`).

    Returns:
        The `keras.distillation` module.

    Raises:
        ImportError: If the installed Keras has no `keras.distillation`.
    """
    module = keras_distillation()
    if module is None:
        raise ImportError(
            f"{feature} needs `keras.distillation`, added in Keras "
            f"{KERAS_DISTILLATION_VERSION}. Expected "
            f"keras>={KERAS_DISTILLATION_VERSION}. Received: "
            f"keras=={keras.version()}. Upgrade with: pip install "
            f"'keras>={KERAS_DISTILLATION_VERSION}' (every keras_distill "
            "loss works without it)."
        )
    return module


def is_keras_distillation_loss(obj):
    """Whether `obj` is a `keras.distillation.DistillationLoss`.

    Always False on a Keras without `keras.distillation`.
    """
    base = getattr(keras_distillation(), "DistillationLoss", None)
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

    Raises:
        ImportError: If the installed Keras has no `keras.distillation`
            (Keras before 3.12).
        ValueError: If `loss` is not a `keras.distillation` loss.

    Example:

    >>> ours = keras_distill.losses.from_keras(
    ...     keras.distillation.LogitsDistillation(temperature=3.0))
    >>> ours.temperature
    3.0
    """
    module = require_keras_distillation("keras_distill.losses.from_keras")
    if isinstance(loss, module.LogitsDistillation):
        if is_kl_divergence(loss.loss):
            return LogitsDistillation(temperature=loss.temperature)
    return KerasDistillationLoss(loss)


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
        ImportError: If the installed Keras has no `keras.distillation`
            (Keras before 3.12).
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
        require_keras_distillation("keras_distill.losses.KerasDistillationLoss")
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


# `keras_distill.losses.get` converts `keras.distillation` losses.
add_converter(is_keras_distillation_loss, from_keras)
