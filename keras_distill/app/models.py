"""The run's models from what the user names: a zoo name, a trained
`.keras` file, a Python factory `package.module:function`, or a Keras
`{"class_name", "config"}` model config (`keras_distill.app.config.
model_kind` tells them apart without loading anything).
"""

import importlib
import inspect
import json
import os
import sys

import keras

from keras_distill.app import zoo
from keras_distill.app.config import model_kind


def _factory(reference):
    """The function `package.module:function` names, imported from the
    working directory first."""
    module_name, function_name = reference.split(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(
            f"Invalid model factory {reference!r}. Expected a module "
            "importable from the working directory (or installed). "
            f"Received: {error}"
        ) from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ValueError(
            f"Invalid model factory {reference!r}. Expected the module "
            f"{module_name!r} to define a function {function_name!r}."
        )
    return function


def build(reference, input_shape, num_classes, seed):
    """A model from a reference, with seeded fresh weights unless it is a
    trained file.

    Args:
        reference: What `keras_distill.app.config.model_kind` accepts.
        input_shape: The data's input shape (for zoo names, and factories
            that take `input_shape`).
        num_classes: The data's class count (likewise).
        seed: The seed of fresh weights: the same seed gives the same
            weights, so a distilled student and its scratch twin start
            alike.

    Returns:
        A `keras.Model`.

    Raises:
        ValueError: If the reference does not give a `keras.Model`.
    """
    kind = model_kind(reference)
    if kind == "zoo":
        return zoo.build(reference, input_shape, num_classes, seed=seed)
    keras.utils.set_random_seed(seed)
    if kind == "file":
        model = keras.models.load_model(reference, compile=False)
    elif kind == "config":
        if isinstance(reference, str):
            reference = json.loads(reference)
        # A hand-written config may leave out the "module" of Keras' own
        # models ("Sequential", "Functional").
        model = keras.saving.deserialize_keras_object(
            {"module": "keras", "registered_name": None, **reference}
        )
    elif kind == "factory":
        function = _factory(reference)
        wanted = inspect.signature(function).parameters
        arguments = {
            k: v
            for k, v in (
                ("input_shape", input_shape and tuple(input_shape)),
                ("num_classes", num_classes),
            )
            if k in wanted and v is not None
        }
        model = function(**arguments)
    else:
        raise ValueError(f"Invalid model reference {reference!r}.")
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"Invalid model reference {reference!r}. Expected it to give a "
            f"keras.Model. Received: {type(model).__name__}"
        )
    return model


def image_shape(reference):
    """The `(height, width, channels)` a model takes, or None (a zoo name
    or a factory that takes `input_shape`: they take the data's shape;
    inputs of another rank)."""
    kind = model_kind(reference)
    if kind == "zoo":
        return None
    if kind == "factory":
        wanted = inspect.signature(_factory(reference)).parameters
        if {"input_shape", "num_classes"} & set(wanted):
            return None  # it is made for the data's shape
    model = build(reference, None, None, 0)
    inputs = getattr(model, "inputs", None)
    if not inputs or len(inputs) != 1 or len(inputs[0].shape) != 4:
        return None
    shape = tuple(inputs[0].shape[1:])
    return shape if all(shape) else None


def teacher_preprocessing(teacher, input_shape, mode="auto", scale=None):
    """The layer that brings the run's inputs to the teacher, or None.

    Args:
        teacher: The teacher `keras.Model`.
        input_shape: The shape of one of the run's inputs (the
            student's), without the batch axis.
        mode: `"auto"`: resize images to the teacher's size (and repeat a
            grey channel three times); `"none"`: nothing.
        scale: A factor for the teacher's inputs, or None.

    Returns:
        A `keras.Sequential` or None.

    Raises:
        ValueError: If the two inputs cannot be reconciled (other ranks,
            channel counts other than 1 -> 3).
    """
    layers = []
    t_shape = _shape(teacher)
    s_shape = tuple(input_shape)
    if mode == "auto" and t_shape and s_shape and t_shape != s_shape:
        if len(t_shape) != len(s_shape) or len(t_shape) != 3:
            raise ValueError(
                "Invalid teacher and student for this data. Expected images "
                "of any size (height, width, channels) for both, or the same "
                f"input shape. Received: teacher input {t_shape}, student "
                f"input {s_shape}. Give them the same input shape, or "
                "teacher_preprocessing: none and inputs they both take."
            )
        (th, tw, tc), (sh, sw, sc) = t_shape, s_shape
        if (th, tw) != (sh, sw):
            layers.append(keras.layers.Resizing(th, tw))
        if tc != sc:
            if not (sc == 1 and tc == 3):
                raise ValueError(
                    "Invalid teacher and student for this data. Expected "
                    "the same channel count, or grey images (1) for an RGB "
                    f"teacher (3). Received: teacher {tc}, student {sc} "
                    "channels."
                )
            layers.append(keras.layers.Lambda(_grey_to_rgb, name="rgb"))
    if scale is not None:
        layers.append(keras.layers.Rescaling(scale))
    if not layers:
        return None
    return keras.Sequential(layers, name="teacher_preprocessing")


def _shape(model):
    inputs = getattr(model, "inputs", None)
    if not inputs or len(inputs) != 1:
        return None
    return tuple(inputs[0].shape[1:])


@keras.saving.register_keras_serializable(package="keras_distill_app")
def _grey_to_rgb(x):
    return keras.ops.concatenate([x, x, x], axis=-1)
