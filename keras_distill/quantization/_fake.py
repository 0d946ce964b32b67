"""Simulated int8 quantization, as LiteRT computes it.

Weights: symmetric, per output channel, narrow range (int8 values in
`[-127, 127]`, zero point 0, scale `max|w| / 127` per channel).
Activations: asymmetric, per tensor, over `[-128, 127]`, from a range
`[min, max]` that always holds 0, nudged so that 0 is exactly
representable (TensorFlow's `FakeQuantWithMinMaxVars`, whose ranges the
TFLite converter turns into the file's scales and zero points).

Both keep the float dtype and pass gradients straight through inside
the range (zero outside it for activations).
"""

import tensorflow as tf

# The smallest range a weight channel is given: an all-zero channel
# (pruned) still quantizes to zeros instead of dividing by zero.
_TINY = 1e-12


def weight_ranges(kernel, channel_axis=-1):
    """The symmetric per-channel bound `max|w|` of a kernel, as a vector
    along `channel_axis`."""
    rank = len(kernel.shape)
    axis = channel_axis % rank
    reduce = [a for a in range(rank) if a != axis]
    bound = tf.reduce_max(tf.abs(kernel), axis=reduce)
    return tf.maximum(bound, _TINY)


def quantize_weights(kernel, channel_axis=-1):
    """`kernel` rounded to its int8 grid: per channel along
    `channel_axis`, symmetric, narrow range; straight-through gradient."""
    kernel = tf.convert_to_tensor(kernel)
    rank = len(kernel.shape)
    axis = channel_axis % rank
    if axis != rank - 1:  # the op quantizes along the last axis
        perm = [a for a in range(rank) if a != axis] + [axis]
        moved = tf.transpose(kernel, perm)
        inverse = [perm.index(a) for a in range(rank)]
        return tf.transpose(quantize_weights(moved), inverse)
    dtype = kernel.dtype
    values = tf.cast(kernel, "float32")
    scale = tf.stop_gradient(weight_ranges(values)) / 127.0
    # Elementwise ops rather than `FakeQuantWithMinMaxVarsPerChannel`
    # (the same grid: with a symmetric range its nudging changes nothing),
    # several times faster on a CPU; gradients pass straight through.
    steps = tf.clip_by_value(tf.floor(values / scale + 0.5), -127.0, 127.0)
    rounded = values + tf.stop_gradient(steps * scale - values)
    return tf.cast(rounded, dtype)


def quantize_activations(x, low, high):
    """`x` rounded to the int8 grid of the range `[low, high]`
    (asymmetric, per tensor, nudged to hold 0); straight-through gradient
    inside the range."""
    dtype = x.dtype
    low = tf.minimum(tf.cast(low, "float32"), 0.0)
    high = tf.maximum(tf.cast(high, "float32"), 0.0)
    quantized = tf.quantization.fake_quant_with_min_max_vars(
        tf.cast(x, "float32"),
        tf.stop_gradient(low),
        tf.stop_gradient(high),
        num_bits=8,
        narrow_range=False,
    )
    return tf.cast(quantized, dtype)


def quantize_activations_constant(x, low, high):
    """`quantize_activations` with Python float bounds: the form the
    TFLite converter reads at export."""
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    dtype = x.dtype
    quantized = tf.quantization.fake_quant_with_min_max_args(
        tf.cast(x, "float32"), min=low, max=high, num_bits=8
    )
    return tf.cast(quantized, dtype)


# The converter's dynamic-range mode leaves smaller weights in float.
DYNAMIC_MIN_ELEMENTS = 1024


def quantize_rows(x, axes=1):
    """`x` rounded as LiteRT's dynamic-range kernels round an input at run
    time: each row (the axes an op reduces over: a token's features for a
    fully connected op, a whole image for a convolution) on its own int8
    grid, asymmetric, its range `[min(0, row min), max(0, row max)]`,
    `scale = range / 255`, zero point rounded into `[-128, 127]`;
    straight-through gradient.

    Args:
        x: A float tensor.
        axes: The row's axes: an int for that many trailing axes, or a
            tuple of axis indices.

    Returns:
        The rounded tensor, in `x`'s dtype.
    """
    x = tf.convert_to_tensor(x)
    dtype = x.dtype
    values = tf.cast(x, "float32")
    rank = len(x.shape)
    if isinstance(axes, int):
        reduce = list(range(rank - axes, rank))
    else:
        reduce = sorted(a % rank for a in axes)
    low = tf.minimum(tf.reduce_min(values, reduce, keepdims=True), 0.0)
    high = tf.maximum(tf.reduce_max(values, reduce, keepdims=True), 0.0)
    scale = tf.maximum(high - low, _TINY) / 255.0
    zero = tf.clip_by_value(tf.round(-128.0 - low / scale), -128.0, 127.0)
    steps = tf.clip_by_value(tf.round(values / scale) + zero, -128.0, 127.0)
    rounded = (steps - zero) * scale
    rounded = values + tf.stop_gradient(rounded - values)
    return tf.cast(rounded, dtype)


def quantize_symmetric(x):
    """`x` on one symmetric int8 grid (`scale = max|x| / 127`, zero point
    0), as the dynamic-range mode stores a gathered table;
    straight-through gradient."""
    x = tf.convert_to_tensor(x)
    dtype = x.dtype
    values = tf.cast(x, "float32")
    scale = tf.stop_gradient(tf.maximum(tf.reduce_max(tf.abs(values)), _TINY))
    scale = scale / 127.0
    steps = tf.clip_by_value(tf.round(values / scale), -127.0, 127.0)
    rounded = values + tf.stop_gradient(steps * scale - values)
    return tf.cast(rounded, dtype)
