"""A layer the teacher holds and the distiller holds again, saved once.

A `Distiller` may be given, as `teacher_preprocessing`, a layer that is
also part of the teacher: a KerasHub task's own `preprocessor` (its
tokenizer and vocabulary included), or one of the teacher's layers. Keras
saves each object once, at its first place, and a config that spelled the
layer out twice would load as two objects, the second without its assets.
So the distiller's config names such a layer by where it sits in the
teacher, and loading points back at the teacher's own object.
"""

import copy

import keras

from keras_distill._utils import nested_layers

_ATTRIBUTE = "teacher_attribute"
_LAYER = "teacher_layer"


def reference(teacher, layer):
    """How `layer` is found in `teacher`, or None if it is not there.

    Args:
        teacher: The teacher `keras.Model`, or None.
        layer: The distiller's `teacher_preprocessing`.

    Returns:
        `{"teacher_attribute": "preprocessor"}` for a KerasHub task's own
        preprocessor, `{"teacher_layer": name}` for one of its layers
        (found by a unique name), or None.
    """
    if teacher is None or layer is None:
        return None
    if layer is getattr(teacher, "preprocessor", None):
        return {_ATTRIBUTE: "preprocessor"}
    named = [x for x in nested_layers(teacher) if x.name == layer.name]
    if len(named) == 1 and named[0] is layer:
        return {_LAYER: layer.name}
    return None


def is_reference(config):
    """Whether a saved `teacher_preprocessing` is such a reference."""
    return isinstance(config, dict) and set(config) in ({_ATTRIBUTE}, {_LAYER})


def resolve(teacher, config):
    """The teacher's own object a reference names.

    Raises:
        ValueError: If the teacher holds no such attribute or layer.
    """
    if _ATTRIBUTE in config:
        found = getattr(teacher, config[_ATTRIBUTE], None)
    else:
        found = next(
            (x for x in nested_layers(teacher) if x.name == config[_LAYER]),
            None,
        )
    if found is None:
        raise ValueError(
            "Invalid saved `teacher_preprocessing`. Expected the teacher to "
            f"hold what it names. Received: {config!r} for the teacher "
            f"{teacher.name!r}, which has no such layer"
        )
    return found


def serialized(config, distiller, keys):
    """`config` with the distiller's attributes `keys` serialized as Keras
    objects, a teacher's own layer as `teacher_preprocessing` named by
    `reference`."""
    for key in keys:
        config[key] = keras.saving.serialize_keras_object(
            getattr(distiller, key)
        )
    shared = reference(distiller.teacher, distiller.teacher_preprocessing)
    if shared is not None:
        config["teacher_preprocessing"] = shared
    return config


def deserialized(config, keys, custom_objects=None):
    """A copy of a `serialized` config with its Keras objects rebuilt
    (`teacher_preprocessing` resolved in the rebuilt teacher)."""
    config = copy.deepcopy(config)  # deserialization consumes dicts
    shared = config.get("teacher_preprocessing")
    shared = shared if is_reference(shared) else None
    if shared is not None:
        config["teacher_preprocessing"] = None
    for key in keys:
        config[key] = keras.saving.deserialize_keras_object(
            config.get(key), custom_objects=custom_objects
        )
    if shared is not None:
        config["teacher_preprocessing"] = resolve(config["teacher"], shared)
    return config
