"""The float32 twin: a mixed-precision model as a clone with the same
weights that computes in float32, as TFLite's builtin ops do.
"""

import keras

from keras_distill._utils import nested_layers


def float32_compute(model):
    """`model`, or a float32-compute twin of a mixed-precision model.

    A `mixed_float16` / `mixed_bfloat16` student computes in half
    precision, which TFLite cannot take without TF Select ops; its weights
    are float32 already, so a clone whose layers compute in float32 holds
    exactly the same weights and converts with the builtin ops.
    """
    if all(
        getattr(layer, "compute_dtype", "float32") in ("float32", "string")
        for layer in nested_layers(model)
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
