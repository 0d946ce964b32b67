"""Loss names: the one decorator every loss registers with, and `get`.

`register` gives a loss its names (for `Distiller(distillation_losses=
"kd")`, config files and the CLI) and registers it with Keras'
serialization, so a saved distiller reloads it in a fresh process.
`get` resolves a name, a Keras config, an instance or, through the
converters `keras_distill.losses.compat` adds, a `keras.distillation` loss.
"""

import keras

from keras_distill.losses.base import DistillationLoss

_REGISTRY = {}
# `(accepts, convert)` pairs: `get` converts objects that `accepts` takes.
_CONVERTERS = []


def register(*names, package="keras_distill"):
    """Class decorator: names a `DistillationLoss` and makes it saveable.

    Registers the class under each of `names` (resolved by
    `keras_distill.losses.get`) and with
    `keras.saving.register_keras_serializable(package=package)`.

    Args:
        *names: One or more lower-case names for the class.
        package: The Keras serialization package. Defaults to
            `"keras_distill"`; use your own for your own losses.

    Returns:
        A decorator that registers the class and returns it.

    Raises:
        ValueError: If a name is not a lower-case string, or is taken by
            another class.

    Example:

    ```python
    @keras_distill.losses.register("l1_logits", package="my_project")
    class L1Logits(keras_distill.losses.DistillationLoss):
        def compute(self, teacher_outputs, student_outputs, y_true=None):
            return keras.ops.mean(
                keras.ops.abs(teacher_outputs - student_outputs)
            )
    ```
    """
    for name in names:
        if not isinstance(name, str) or name != name.lower() or not name:
            raise ValueError(
                "Invalid loss name. Expected a non-empty lower-case string. "
                f"Received: {name!r}"
            )

    def decorator(cls):
        for name in names:
            taken = _REGISTRY.get(name)
            if taken is not None and taken.__qualname__ != cls.__qualname__:
                raise ValueError(
                    f"Invalid loss name {name!r} for `{cls.__name__}`. "
                    "Expected a name no other loss has. Received: the name "
                    f"of `{taken.__name__}`"
                )
            _REGISTRY[name] = cls
        return keras.saving.register_keras_serializable(package=package)(cls)

    return decorator


def add_converter(accepts, convert):
    """Lets `get` resolve other objects: `convert(obj)` for each `obj` that
    `accepts(obj)` is true of (used for `keras.distillation` losses)."""
    _CONVERTERS.append((accepts, convert))


def known_names():
    """Returns the sorted list of registered distillation loss names."""
    return sorted(_REGISTRY)


def get(identifier):
    """Resolves a distillation loss from a name, a config or an instance.

    Args:
        identifier: A registered name (for example `"kd"`), a dict in Keras'
            `{"class_name": ..., "config": ...}` form, a `DistillationLoss`
            instance (returned as is), or a `keras.distillation` loss (wrapped
            or converted, see `keras_distill.losses.from_keras`).

    Returns:
        A `DistillationLoss` instance.

    Raises:
        ValueError: If a name is not registered (the message lists the
            known names) or the identifier has an unsupported type.

    Example:

    >>> loss = keras_distill.losses.get("kd")
    >>> type(loss).__name__
    'LogitsDistillation'
    """
    if isinstance(identifier, DistillationLoss):
        return identifier
    if isinstance(identifier, str):
        key = identifier.lower()
        if key not in _REGISTRY:
            raise ValueError(
                "Invalid value for argument `distillation_losses`. Expected "
                f"one of the registered loss names {known_names()}. "
                f"Received: distillation_losses={identifier!r}"
            )
        return _REGISTRY[key]()
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    for accepts, convert in _CONVERTERS:
        if accepts(identifier):
            return convert(identifier)
    raise ValueError(
        "Invalid value for argument `distillation_losses`. Expected a "
        "`keras_distill.losses.DistillationLoss`, a "
        "`keras.distillation.DistillationLoss` or one of the registered names "
        f"{known_names()}. Received: distillation_losses={identifier!r} "
        f"of type {type(identifier).__name__}"
    )
