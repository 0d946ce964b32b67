"""Argument checks of the `Distiller`, in one calling style.

Each `check_*` function takes the argument (and its name where it varies)
and returns the value to use, or raises `ValueError` in Keras' form:
"Invalid value for argument `x`. Expected ... Received: x=...".
"""

import keras


def check_backend():
    """Raises `RuntimeError` unless Keras runs on TensorFlow."""
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            "keras_distill.Distiller runs on the TensorFlow backend only. "
            "Expected KERAS_BACKEND='tensorflow'. Received: "
            f"KERAS_BACKEND={backend!r}"
        )


def check_augment(augment):
    """`None`, or the augmentation as a `ConsistentAugment`."""
    from keras_distill.augment import ConsistentAugment

    if augment is None or isinstance(augment, ConsistentAugment):
        return augment
    if isinstance(augment, (keras.layers.Layer, list, tuple)):
        return ConsistentAugment(augment)
    raise ValueError(
        "Invalid value for argument `augment`. Expected a "
        "`keras_distill.augment.ConsistentAugment` or a list of augmentation "
        f"layers. Received: augment={augment!r}"
    )


def check_model(arg, model):
    """Checks that `model` is a `keras.Model` (built or not)."""
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"Invalid value for argument `{arg}`. Expected a "
            f"`keras.Model`. Received: {arg}={model!r} of type "
            f"{type(model).__name__}"
        )


def check_preprocessing(value):
    """`teacher_preprocessing`: None or a callable (a layer); returned."""
    if value is None or callable(value):
        return value
    raise ValueError(
        "Invalid value for argument `teacher_preprocessing`. Expected a "
        "`keras.layers.Layer` (for example a `keras.Sequential` of "
        "`Resizing` and `Rescaling`) or a callable applied to the teacher's "
        f"inputs. Received: teacher_preprocessing={value!r}"
    )


def check_fraction(arg, value):
    """A number in [0, 1], returned as a float."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        and not hasattr(value, "__float__")
    ):
        raise ValueError(
            f"Invalid value for argument `{arg}`. Expected a float in "
            f"[0, 1]. Received: {arg}={value!r}"
        )
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(
            f"Invalid value for argument `{arg}`. Expected a float in "
            f"[0, 1]. Received: {arg}={value!r}"
        )
    return float(value)


def check_weights(weights, count):
    """`count` non-negative finite loss weights, returned as floats."""
    if isinstance(weights, (int, float)) and not isinstance(weights, bool):
        weights = [weights]
    if not isinstance(weights, (list, tuple)) or len(weights) != count:
        raise ValueError(
            "Invalid value for argument `distillation_loss_weights`. Expected "
            f"a list of {count} non-negative floats, one per distillation "
            f"loss. Received: distillation_loss_weights={weights!r}"
        )
    checked = []
    for weight in weights:
        if (
            isinstance(weight, bool)
            or not isinstance(weight, (int, float))
            or not weight >= 0
            or weight == float("inf")
        ):
            raise ValueError(
                "Invalid value for argument `distillation_loss_weights`. "
                "Expected non-negative finite floats. Received: "
                f"distillation_loss_weights={list(weights)!r}"
            )
        checked.append(float(weight))
    return checked
