"""The model an export converts: a `Distiller`'s student (never the
teacher), computing in float32 — a mixed-precision student is replaced by
its float32 twin, a clone with the same weights.
"""

import keras

from keras_distill.distiller import Distiller
from keras_distill.export._specs import InputSpecs
from keras_distill.utils import input_shape as _model_input_shape


def student(model):
    """The model to export and its input specs (`InputSpecs`)."""
    if isinstance(model, Distiller):
        model = model.student
    if not isinstance(model, keras.Model):
        raise ValueError(
            "Invalid value for argument `model`. Expected a `keras.Model` "
            "or a `keras_distill.Distiller`. Received: "
            f"model={model!r} of type {type(model).__name__}"
        )
    specs = InputSpecs.of(model)
    if specs is None:
        shape = _model_input_shape(model)
        raise ValueError(
            "Invalid value for argument `model`. Expected a model with a "
            "defined input shape (a Functional or Sequential model, or a "
            "subclassed model built with `model.build(input_shape)`). "
            f"Received: {model.name!r} with input shape {shape}"
        )
    return float32_compute(model), specs


def float32_compute(model):
    """`model`, or a float32-compute twin of a mixed-precision model.

    A `mixed_float16` / `mixed_bfloat16` student computes in half
    precision, which TFLite cannot take without TF Select ops; its weights
    are float32 already, so a clone whose layers compute in float32 holds
    exactly the same weights and converts with the builtin ops.
    """
    if all(
        getattr(layer, "compute_dtype", "float32") == "float32"
        for layer in _all_layers(model)
    ):
        return model

    def clone(layer):
        config = layer.get_config()
        config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    try:
        twin = keras.models.clone_model(model, clone_function=clone)
    except Exception as error:  # a subclassed model cannot be cloned
        raise ValueError(
            "Invalid value for argument `model`. Expected a float32 model, "
            "or a Functional/Sequential mixed-precision model that can be "
            "cloned to compute in float32 for TFLite. Received: "
            f"{model.name!r}, which computes in "
            f"{model.compute_dtype} and cannot be cloned ({error})"
        ) from None
    twin.set_weights(model.get_weights())
    return twin


def _all_layers(model):
    """Every layer of a model, nested models' layers included."""
    for layer in getattr(model, "layers", []):
        yield layer
        yield from _all_layers(layer)
