"""The twin's wrappers of layers that are not weighted: `QuantizedOutput`
(an output rounded to its own range), `QuantizedOperation` (the same
for a Keras op in a functional graph, such as `x + y`),
`QuantizedEmbedding` and `FoldedAway`."""

import keras
import numpy as np
from keras import ops

from keras_distill.quantization import _fake
from keras_distill.quantization._layers import FIXED_RANGES
from keras_distill.quantization._layers import ActivationQuantizer
from keras_distill.quantization._layers import _Wrapper


def _rounded(quantizer, outputs, training):
    """`outputs` rounded by `quantizer` if it is a float tensor (integer
    and boolean outputs are exact in the file)."""
    if "float" not in keras.backend.standardize_dtype(outputs.dtype):
        return outputs
    return quantizer(outputs, training=training)


def _one_output(spec, name):
    """Raises unless `spec` is one tensor: one range rounds one output."""
    if isinstance(spec, (list, tuple, dict)):
        raise ValueError(
            "Invalid model for `quantization_aware`. Expected layers "
            "without an int8 simulation to return one tensor. Received: "
            f"{name!r}, which returns {type(spec).__name__} of "
            f"{len(spec)}; use scheme='dynamic', or split it into layers "
            "of one output"
        )
    return spec


@keras.saving.register_keras_serializable(package="keras_distill")
class QuantizedOutput(_Wrapper):
    """A layer whose output is rounded to its own tracked int8 range: an
    `Add`, a `Concatenate`, an activation or an average pooling, which
    LiteRT runs in int8, or a layer without an int8 simulation (a
    `LayerNormalization`, a custom layer), which the file runs in float
    between int8 tensors. An output that is not float passes unrounded.

    Args:
        layer: The layer to wrap.
        decay: The range's moving-average decay.
        **kwargs: `keras.layers.Layer` arguments.
    """

    def __init__(self, layer, decay=0.99, **kwargs):
        super().__init__(layer, **kwargs)
        self.decay = decay
        self.output_quantizer = ActivationQuantizer(
            decay,
            fixed_range=FIXED_RANGES.get(_activation_name(layer)),
            name=f"{self.name}_output",
        )

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        self.output_quantizer.build(input_shape)  # a per-tensor range

    def call(self, inputs, *args, training=None, mask=None, **kwargs):
        outputs = self.layer(inputs, *args, **kwargs)
        return _rounded(self.output_quantizer, outputs, training)

    def compute_output_spec(
        self, inputs, *args, training=None, mask=None, **kwargs
    ):
        spec = self.layer.compute_output_spec(inputs, *args, **kwargs)
        return _one_output(spec, self.layer.name)

    def get_config(self):
        return {**super().get_config(), "decay": self.decay}


@keras.saving.register_keras_serializable(package="keras_distill")
class QuantizedEmbedding(_Wrapper):
    """An `Embedding` whose table is rounded to one int8 grid, as LiteRT
    stores a gathered table; the looked-up rows keep that grid.

    Under the `"int8"` scheme the grid is asymmetric, from the table's own
    minimum and maximum; under `"dynamic"` (`symmetric=True`) it is
    symmetric (`max|w| / 127`), and a table of fewer than 1,024 values
    stays float, as the converter leaves it.

    Args:
        layer: The `Embedding` to wrap.
        symmetric: Whether to use the dynamic-range mode's grid.
        **kwargs: `keras.layers.Layer` arguments.
    """

    def __init__(self, layer, symmetric=False, **kwargs):
        super().__init__(layer, **kwargs)
        self.symmetric = bool(symmetric)
        # Set by `keras_distill.export`: the table's range as floats.
        self.constant_range = None

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)

    def table(self):
        """The rounded table."""
        table = self.layer.embeddings
        if self.symmetric:
            size = int(np.prod(table.shape))
            if size < _fake.DYNAMIC_MIN_ELEMENTS:
                return table
            return _fake.quantize_symmetric(table)
        if self.constant_range is not None:
            return _fake.quantize_activations_constant(
                ops.convert_to_tensor(table), *self.constant_range
            )
        low = ops.stop_gradient(ops.min(table))
        high = ops.stop_gradient(ops.max(table))
        return _fake.quantize_activations(table, low, high)

    def call(self, inputs, training=None, mask=None):
        return ops.take(self.table(), ops.cast(inputs, "int32"), axis=0)

    def compute_mask(self, inputs, mask=None):
        return self.layer.compute_mask(inputs, mask)

    def get_config(self):
        return {**super().get_config(), "symmetric": self.symmetric}


@keras.saving.register_keras_serializable(package="keras_distill")
class FoldedAway(keras.layers.Layer):
    """Where a folded `BatchNormalization` was: passes its input on."""

    def call(self, inputs, training=None, mask=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="keras_distill")
class QuantizedOperation(keras.layers.Layer):
    """A Keras op of a functional graph (`x + y`, `ops.concatenate`, ...)
    whose output is rounded to its own tracked int8 range (the fixed grid
    of LiteRT's kernel for `ops.tanh`, `ops.sigmoid`, `ops.softmax`); an
    output that is not float passes unrounded.

    Args:
        operation: The `keras.Operation` to wrap.
        decay: The range's moving-average decay.
        **kwargs: `keras.layers.Layer` arguments.
    """

    def __init__(self, operation, decay=0.99, **kwargs):
        kwargs.setdefault("name", f"{operation.name}_quantized")
        super().__init__(**kwargs)
        self.operation = operation
        self.decay = decay
        self.output_quantizer = ActivationQuantizer(
            decay,
            # `ops.tanh`, `ops.sigmoid`, `ops.softmax`: LiteRT's fixed grids.
            fixed_range=FIXED_RANGES.get(type(operation).__name__.lower()),
            name=f"{self.name}_output",
        )
        self.output_quantizer.build(None)  # per-tensor scalars
        self.built = True

    def call(self, *args, training=None, **kwargs):
        outputs = self.operation(*args, **kwargs)
        return _rounded(self.output_quantizer, outputs, training)

    def compute_output_spec(self, *args, training=None, **kwargs):
        spec = self.operation.compute_output_spec(*args, **kwargs)
        return _one_output(spec, self.operation.name)

    def get_config(self):
        return {
            **super().get_config(),
            "operation": keras.saving.serialize_keras_object(self.operation),
            "decay": self.decay,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["operation"] = keras.saving.deserialize_keras_object(
            config["operation"]
        )
        return cls(**config)


def _activation_name(layer):
    """The activation a Softmax or Activation layer applies, or None."""
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    if isinstance(layer, keras.layers.Activation):
        name = keras.activations.serialize(layer.activation)
        return name if isinstance(name, str) else None
    return None
