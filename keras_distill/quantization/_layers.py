"""The layers of a quantization-aware twin: `ActivationQuantizer` (a
per-tensor range tracked during training) and `QuantizedLayer` (a
`Dense`, `Conv1D`, `Conv2D`, `DepthwiseConv2D` or `EinsumDense` computing
with int8-rounded weights, a `BatchNormalization` after it folded in)."""

import keras
import numpy as np
from keras import ops

from keras_distill._validation import check_choice
from keras_distill.quantization import _fake

# Activations LiteRT fuses into the op before them: the output is
# quantized once, after them. Any other activation runs as its own op,
# its input and output quantized.
FUSED_ACTIVATIONS = ("linear", "relu", "relu6")
SCHEMES = ("int8", "dynamic")
# LiteRT's int8 kernels of these activations write on a fixed grid: tanh
# scale 1/128 zero point 0, the others scale 1/256 zero point -128.
FIXED_RANGES = {
    "tanh": (-1.0, 127.0 / 128.0),
    "sigmoid": (0.0, 255.0 / 256.0),
    "softmax": (0.0, 255.0 / 256.0),
}


@keras.saving.register_keras_serializable(package="keras_distill")
class ActivationQuantizer(keras.layers.Layer):
    """Rounds a tensor to the int8 grid LiteRT will store it on.

    During training (`training=True`) the range `[range_min, range_max]`
    follows the batches' minimum and maximum as a moving average (the
    first batch sets it); `ops.stop_gradient` keeps the range out of the
    gradient, and the rounding passes gradients straight through inside
    the range. Once `frozen` is set (see
    `keras_distill.quantization.freeze_ranges`), or outside training, the
    range stays as it is (a range frozen before any batch takes the first
    training batch's, then stays). The range always holds 0 and is nudged
    so that 0 is exactly representable, as the TFLite converter does.

    Args:
        decay: The moving average's decay, in `[0, 1)`. Defaults to 0.99.
        fixed_range: `(min, max)` to use instead of a tracked range (the
            fixed output grids of LiteRT's tanh, sigmoid and softmax).
        **kwargs: `keras.layers.Layer` arguments.

    Example:

    ```python
    quantizer = keras_distill.quantization.ActivationQuantizer()
    y = quantizer(np.linspace(-1.0, 1.0, 8, dtype="float32"), training=True)
    ```
    """

    def __init__(self, decay=0.99, fixed_range=None, **kwargs):
        super().__init__(**kwargs)
        if not (
            isinstance(decay, (int, float))
            and not isinstance(decay, bool)
            and 0.0 <= decay < 1.0
        ):
            raise ValueError(
                "Invalid value for argument `decay`. Expected a float in "
                f"[0, 1). Received: decay={decay!r}"
            )
        self.decay = float(decay)
        self.fixed_range = None if fixed_range is None else tuple(fixed_range)
        # Python floats set by `keras_distill.export` while it traces the
        # model: the converter reads constant ranges.
        self.constant_range = None

    def build(self, input_shape):
        def scalar(name, aggregation):
            return self.add_weight(
                shape=(),
                initializer="zeros",
                dtype="float32",
                trainable=False,
                aggregation=aggregation,
                name=name,
            )

        # Under a `tf.distribute` strategy the replicas' ranges are
        # averaged; the counters are the first replica's.
        self.range_min = scalar("range_min", "mean")
        self.range_max = scalar("range_max", "mean")
        self.batches = scalar("batches", "only_first_replica")
        self.frozen = scalar("frozen", "only_first_replica")

    def call(self, inputs, training=None):
        fixed = self.constant_range or self.fixed_range
        if fixed is not None:
            return _fake.quantize_activations_constant(inputs, *fixed)
        if training:
            self._track(inputs)
        return _fake.quantize_activations(
            inputs, self.range_min, self.range_max
        )

    def _track(self, inputs):
        values = ops.cast(ops.stop_gradient(inputs), "float32")
        low, high = ops.min(values), ops.max(values)
        first = ops.equal(self.batches, 0.0)
        # Frozen before any batch, a range still takes the first one's.
        frozen = ops.logical_and(
            ops.greater(self.frozen, 0.0), ops.logical_not(first)
        )
        d = self.decay
        for variable, batch in ((self.range_min, low), (self.range_max, high)):
            moved = ops.where(first, batch, d * variable + (1.0 - d) * batch)
            variable.assign(ops.where(frozen, variable, moved))
        self.batches.assign(
            ops.where(frozen, self.batches, self.batches + 1.0)
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "decay": self.decay,
            "fixed_range": self.fixed_range,
        }


class _Wrapper(keras.layers.Layer):
    """A layer around other Keras layers (`LAYER_ARGUMENTS`, each None or
    a layer), serialized with them."""

    LAYER_ARGUMENTS = ("layer",)

    def __init__(self, layer, **kwargs):
        kwargs.setdefault("name", f"{layer.name}_quantized")
        super().__init__(**kwargs)
        self.layer = layer

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        for key in self.LAYER_ARGUMENTS:
            value = getattr(self, key)
            config[key] = (
                None
                if value is None
                else keras.saving.serialize_keras_object(value)
            )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in cls.LAYER_ARGUMENTS:
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(
                    config[key]
                )
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_distill")
class QuantizedLayer(_Wrapper):
    """A `Dense`, `Conv1D`, `Conv2D`, `DepthwiseConv2D` or `EinsumDense`
    computing with its weights rounded to LiteRT's int8 grid.

    The wrapped layer keeps its own variables (the twin trains them). A
    `BatchNormalization` that follows it is folded in as LiteRT folds it
    at conversion, from its moving statistics: `kernel · γ / √(var + ε)`
    and `β + (bias - mean) · γ / √(var + ε)`, the kernel quantized after
    folding; γ and β train, the statistics stay as they are. With the
    `"int8"` scheme the output (after a fused ReLU or ReLU6) is rounded to
    its own tracked range; another activation runs after that rounding,
    and its output is rounded again. With `"dynamic"` each input row is
    rounded as the runtime rounds it (`_fake.quantize_rows`), and a
    kernel of fewer than 1,024 weights stays float, as in the file.

    Args:
        layer: The layer to wrap.
        batch_norm: A `BatchNormalization` layer to fold in, or None.
        scheme: `"int8"` (weights and activations) or `"dynamic"` (int8
            weights, inputs rounded per row at run time).
        decay: The ranges' moving-average decay.
        activation: A `ReLU` layer (or relu activation) after the layer
            that LiteRT fuses into it, or None.
        **kwargs: `keras.layers.Layer` arguments.
    """

    LAYER_ARGUMENTS = ("layer", "batch_norm", "activation")

    def __init__(
        self,
        layer,
        batch_norm=None,
        scheme="int8",
        decay=0.99,
        activation=None,
        **kwargs,
    ):
        super().__init__(layer, **kwargs)
        check_choice("scheme", scheme, SCHEMES)
        self.batch_norm = batch_norm
        self.scheme = scheme
        self.decay = decay
        # A ReLU layer fused in (its own layer in the model).
        self.activation = activation
        source = layer if activation is None else activation
        self._activation_name = _activation_of(source)
        self.output_quantizer = None
        self.activation_quantizer = None
        if scheme == "int8":
            self.output_quantizer = ActivationQuantizer(
                decay, name=f"{self.name}_output"
            )
            if self._activation_name not in FUSED_ACTIVATIONS:
                self.activation_quantizer = ActivationQuantizer(
                    decay,
                    fixed_range=FIXED_RANGES.get(self._activation_name),
                    name=f"{self.name}_activation",
                )
        # Set by `keras_distill.export`: kernels as NumPy constants.
        self.constant_kernel = None

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        shape = self.layer.compute_output_shape(input_shape)
        for quantizer in (self.output_quantizer, self.activation_quantizer):
            if quantizer is not None and not quantizer.built:
                quantizer.build(shape)

    def folded(self):
        """`(kernel, bias)` with the batch normalization folded in (the
        bias may be None when there is neither a bias nor a fold)."""
        layer = self.layer
        kernel = layer.kernel
        bias = getattr(layer, "bias", None)  # None without a bias
        bn = self.batch_norm
        if bn is None:
            return kernel, bias
        factor = ops.rsqrt(bn.moving_variance + bn.epsilon)
        if bn.gamma is not None:
            factor = factor * bn.gamma
        shift = -bn.moving_mean * factor
        if bias is not None:
            shift = shift + bias * factor
        if bn.beta is not None:
            shift = shift + bn.beta
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            m = layer.depth_multiplier
            factor = ops.reshape(factor, (-1, m))
        return kernel * factor, shift

    @property
    def stays_float(self):
        """Whether the file keeps this layer in float: under `"dynamic"`,
        a kernel of fewer than 1,024 weights, as the converter leaves it."""
        size = int(np.prod(self.layer.kernel.shape))
        return self.scheme == "dynamic" and size < _fake.DYNAMIC_MIN_ELEMENTS

    def quantized_kernel(self):
        """The kernel the layer computes with: folded, then rounded."""
        if self.constant_kernel is not None:
            return self.constant_kernel
        kernel, _ = self.folded()
        if self.stays_float:
            return kernel
        return quantize_kernel(self.layer, kernel)

    def call(self, inputs, training=None, mask=None):
        layer = self.layer
        kernel = self.quantized_kernel()
        # Under "dynamic" the file rounds each input row as it runs; the
        # exported graph (constant kernels) leaves that to the runtime.
        rounds_inputs = self.scheme == "dynamic" and not self.stays_float
        if rounds_inputs and self.constant_kernel is None:
            inputs = _fake.quantize_rows(inputs, _row_axes(layer))
        _, bias = self.folded()
        outputs = _compute(layer, inputs, kernel)
        if bias is not None:
            outputs = outputs + _bias_shape(layer, bias, outputs)
        name = self._activation_name
        activate = layer.activation
        if self.activation is not None:
            activate = self.activation
        if name in FUSED_ACTIVATIONS:
            outputs = activate(outputs)
            if self.output_quantizer is not None:
                outputs = self.output_quantizer(outputs, training=training)
            return outputs
        if self.output_quantizer is not None:
            outputs = self.output_quantizer(outputs, training=training)
        outputs = activate(outputs)
        if self.activation_quantizer is not None:
            outputs = self.activation_quantizer(outputs, training=training)
        return outputs

    def get_config(self):
        return {
            **super().get_config(),
            "scheme": self.scheme,
            "decay": self.decay,
        }


def _activation_of(layer):
    """The name of the activation a layer applies ("linear" if none)."""
    if isinstance(layer, keras.layers.ReLU):
        return "relu6" if layer.max_value == 6.0 else "relu"
    activation = getattr(layer, "activation", None)
    if activation is None:
        return "linear"
    name = keras.activations.serialize(activation)
    if isinstance(name, dict):
        name = name.get("config", name)
    return name if isinstance(name, str) else "custom"


def _einsum_axes(layer):
    """`(input letters, kernel letters, output letters)` of an
    `EinsumDense` equation."""
    inputs, output = layer.equation.replace(" ", "").split("->")
    source, kernel = inputs.split(",")
    return source, kernel, output


def _row_axes(layer):
    """The input axes LiteRT's dynamic-range kernel of `layer` rounds
    together (an int: that many trailing axes): the features of a fully
    connected op (the contracted axes of an `EinsumDense`), a whole image
    for a convolution."""
    if isinstance(layer, keras.layers.EinsumDense):
        source, kernel, output = _einsum_axes(layer)
        head, tail = source.split("...") if "..." in source else ("", source)

        def contracted(c):
            return c in kernel and c not in output

        return tuple(
            [i for i, c in enumerate(head) if contracted(c)]
            + [j - len(tail) for j, c in enumerate(tail) if contracted(c)]
        )
    if isinstance(layer, keras.layers.Dense):
        return 1
    return len(layer.kernel.shape) - 1  # Conv1D: 2 axes, Conv2D: 3


def quantize_kernel(layer, kernel):
    """A layer's kernel rounded per output channel, as LiteRT stores it
    (an `EinsumDense` kernel: per element of its axes that reach the
    output, as the file's flattened fully connected weights)."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        shape = ops.shape(kernel)
        flat = ops.reshape(kernel, (shape[0], shape[1], -1))
        return ops.reshape(_fake.quantize_weights(flat), shape)
    if isinstance(layer, keras.layers.EinsumDense):
        _, letters, output = _einsum_axes(layer)
        kept = [i for i, c in enumerate(letters) if c in output]
        if len(kept) > 1:
            order = [i for i in range(len(letters)) if i not in kept] + kept
            moved = ops.transpose(kernel, order)
            shape = ops.shape(moved)
            split = len(letters) - len(kept)
            flat = ops.reshape(moved, (*shape[:split], -1))
            rounded = ops.reshape(_fake.quantize_weights(flat), shape)
            inverse = [order.index(i) for i in range(len(order))]
            return ops.transpose(rounded, inverse)
        if kept:
            return _fake.quantize_weights(kernel, kept[0])
    return _fake.quantize_weights(kernel, -1)


def _compute(layer, inputs, kernel):
    """The layer's linear part with `kernel` in place of its own."""
    if isinstance(layer, keras.layers.Dense):
        return ops.matmul(inputs, ops.cast(kernel, inputs.dtype))
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return ops.depthwise_conv(
            inputs,
            kernel,
            strides=layer.strides,
            padding=layer.padding,
            data_format=layer.data_format,
            dilation_rate=layer.dilation_rate,
        )
    if isinstance(layer, keras.layers.EinsumDense):
        return ops.einsum(layer.equation, inputs, kernel)
    # Conv1D, Conv2D
    return ops.conv(
        inputs,
        kernel,
        strides=list(layer.strides),
        padding=layer.padding,
        data_format=layer.data_format,
        dilation_rate=layer.dilation_rate,
    )


def _bias_shape(layer, bias, outputs):
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        rank = len(outputs.shape)
        return ops.reshape(bias, (1, -1) + (1,) * (rank - 2))
    return bias
