"""`quantization_aware`: the twin of a Keras model that computes as its
LiteRT int8 file will; `freeze_ranges` and the export's constant form."""

import contextlib
import warnings

import keras
import numpy as np

from keras_distill._validation import check_choice
from keras_distill.quantization._attention import QuantizedAttention
from keras_distill.quantization._layers import SCHEMES
from keras_distill.quantization._layers import ActivationQuantizer
from keras_distill.quantization._layers import QuantizedLayer
from keras_distill.quantization._wrappers import FoldedAway
from keras_distill.quantization._wrappers import QuantizedEmbedding
from keras_distill.quantization._wrappers import QuantizedOperation
from keras_distill.quantization._wrappers import QuantizedOutput
from keras_distill.quantization._wrappers import _activation_name

# Layers whose weights are rounded (their output too, under "int8").
WEIGHTED = (
    keras.layers.Dense,
    keras.layers.EinsumDense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
)
# Layers whose int8 output keeps its input's scale in LiteRT: nothing
# to round after them.
PRESERVING = (
    keras.layers.InputLayer,
    keras.layers.Flatten,
    keras.layers.Reshape,
    keras.layers.Permute,
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.GaussianNoise,
    keras.layers.Identity,
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.ZeroPadding1D,
    keras.layers.ZeroPadding2D,
    keras.layers.Cropping1D,
    keras.layers.Cropping2D,
)
# Layers LiteRT runs in int8 with an output scale of their own: their
# output is rounded to a tracked range.
REQUANTIZING = (
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Multiply,
    keras.layers.Average,
    keras.layers.Maximum,
    keras.layers.Minimum,
    keras.layers.Concatenate,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.Activation,
    keras.layers.Softmax,
    keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D,
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
)
# What `quantization_aware` does with a layer it has no int8 simulation of.
FLOAT_LAYERS = ("warn", "keep", "raise")
# Keras ops of a functional graph (`x + y`, `ops.reshape`), by class name:
# those that keep their input's int8 grid, and those LiteRT runs in int8
# with an output range of their own.
PRESERVING_OPS = ("Reshape", "Transpose", "ExpandDims", "Squeeze", "GetItem")
REQUANTIZING_OPS = (
    "Add",
    "Subtract",
    "Multiply",
    "Concatenate",
    "Maximum",
    "Minimum",
    "Mean",
    "Relu",
    "Relu6",
    "Gelu",
    "LeakyRelu",
    "Tanh",
    "Sigmoid",
    "Softmax",
)


def _producer(tensor):
    history = getattr(tensor, "_keras_history", None)
    return None if history is None else history[0]


def _sole_reader(layer):
    """The one layer that reads `layer`'s only output, or None."""
    nodes = layer._outbound_nodes
    if len(layer._inbound_nodes) != 1 or len(nodes) != 1:
        return None
    return nodes[0].operation


def _linear(layer):
    return getattr(layer, "activation", None) in (
        None,
        keras.activations.linear,
    )


def _fusable_relu(layer):
    """Whether LiteRT fuses `layer` (a ReLU or a relu/relu6 activation)
    into the op before it."""
    if isinstance(layer, keras.layers.ReLU):
        plain = layer.negative_slope == 0 and layer.threshold == 0
        return plain and layer.max_value in (None, 6.0)
    return _activation_name(layer) in ("relu", "relu6")


def _folds(model):
    """`{id(weighted layer): (BatchNormalization or None, activation
    layer or None)}`: the batch normalization (last axis) and the ReLU
    that follow a Dense or convolution without activation, each the
    only reader of what it reads, to fold into it as LiteRT fuses them."""
    folds = {}
    for layer in model.layers:
        if not isinstance(layer, WEIGHTED) or not _linear(layer):
            continue
        if isinstance(layer, keras.layers.EinsumDense):
            continue
        batch_norm = activation = None
        reader = _sole_reader(layer)
        if isinstance(reader, keras.layers.BatchNormalization):
            rank = len(reader._inbound_nodes[0].input_tensors[0].shape)
            if reader.axis in (-1, rank - 1):
                batch_norm = reader
                reader = _sole_reader(reader)
        if reader is not None and _fusable_relu(reader):
            activation = reader
        if batch_norm is not None or activation is not None:
            folds[id(layer)] = (batch_norm, activation)
    return folds


def _check_supported(layer):
    if getattr(layer, "groups", 1) != 1:
        raise ValueError(
            "Invalid model for `quantization_aware`. Expected "
            f"convolutions with groups=1. Received: layer {layer.name!r} "
            f"with groups={layer.groups}"
        )


def _float_outputs(operation):
    """Whether an op of the graph outputs a float tensor (an integer or
    boolean output, such as an argmax, is exact in the file)."""
    return any(
        "float" in str(tensor.dtype)
        for node in operation._inbound_nodes
        for tensor in node.outputs
    )


def _check_no_hidden_weights(layer):
    """Refuses a layer the twin does not wrap that holds layers whose
    weights the file quantizes (a custom block of `Dense` layers): the
    twin would compute them in float where the file would not."""
    kinds = WEIGHTED + (keras.layers.Embedding, keras.layers.MultiHeadAttention)
    inner = [
        sub
        for sub in layer._flatten_layers(include_self=False, recursive=True)
        if isinstance(sub, kinds)
    ]
    if inner:
        raise ValueError(
            "Invalid model for `quantization_aware`. Expected quantized "
            "layers (Dense, convolutions, EinsumDense, Embedding, "
            "MultiHeadAttention) directly in the functional model. "
            f"Received: layer {layer.name!r} of type "
            f"{type(layer).__name__} holding {inner[0].name!r} "
            f"({type(inner[0]).__name__}), whose weights the file would "
            "quantize where the twin cannot see them; build the model "
            "from those layers in one functional graph"
        )


def _float_inputs(model):
    return [
        i
        for i in model.inputs
        if "float" in str(getattr(i, "dtype", "float32"))
    ]


def quantization_aware(
    model, scheme="int8", decay=0.99, float_layers="warn"
):
    """The quantization-aware twin of a Keras model.

    The twin shares the model's weights and computes as the model's
    LiteRT file will: every `Dense`, `Conv1D`, `Conv2D`,
    `DepthwiseConv2D` and `EinsumDense` (and the projections of a
    `MultiHeadAttention`) uses its weights rounded to int8 (symmetric,
    per output channel, narrow range), every `Embedding` its table on one
    int8 grid, and a `BatchNormalization` right after one is folded into
    it. With the `"int8"` scheme every activation LiteRT stores (the float
    inputs, each of those layers' outputs after a fused ReLU or ReLU6, the
    outputs of `Add`, `Concatenate`, `x + y`, activations and average
    poolings) is rounded to a per-tensor int8 range tracked while
    training; a layer without an int8 simulation (a
    `LayerNormalization`, a custom layer) runs in float between int8
    tensors, as the file runs it (see `float_layers`). With `"dynamic"`
    each input of a dense or convolution is rounded per row as the
    runtime rounds it, and the rest stays float, as in the file. Train the
    twin as any model (as a `keras_distill.Distiller`'s student, from the
    float teacher); gradients pass straight through the rounding. Then
    export it with `keras_distill.export.tflite(twin, path,
    quantize=scheme)`: with `"int8"` no representative data is needed
    (the file takes the ranges the twin learned).

    Since the weights are shared, pruning masks (`keras_distill.prune`)
    on the original model's kernels keep applying; zeros round to zero.

    Args:
        model: A functional or `Sequential` Keras model, built.
        scheme: `"int8"` (full integer: weights and activations, as
            `quantize="int8"` exports) or `"dynamic"` (int8 weights, inputs
            rounded at run time, as `quantize="dynamic"` exports).
        decay: The activation ranges' moving-average decay.
        float_layers: What `"int8"` does with a layer it cannot simulate:
            `"warn"` (run it in float between int8 tensors, and say
            which), `"keep"` (the same, silently) or `"raise"`.

    Returns:
        A `keras.Model` with the same inputs and outputs.

    Raises:
        ValueError: If the model is subclassed, unbuilt or nests a
            model, an argument is unknown, a `BatchNormalization` cannot
            be folded, a convolution has `groups > 1`, a layer the twin
            does not wrap holds quantized layers (a custom block of
            `Dense` layers), or (with `"int8"`) an `Embedding` has
            `mask_zero=True`, a layer returns several tensors without an
            int8 simulation, a `MultiHeadAttention` is present or, under
            `float_layers="raise"`, another layer has no int8 simulation.
            Each error names the layer.

    Example:

    ```python
    twin = keras_distill.quantization.quantization_aware(student)
    distiller = keras_distill.Distiller(teacher, twin)
    ```
    """
    check_choice("scheme", scheme, SCHEMES)
    check_choice("float_layers", float_layers, FLOAT_LAYERS)
    functional = isinstance(model, keras.Sequential) or (
        isinstance(model, keras.Model) and hasattr(model, "_operations")
    )
    if not functional:
        raise ValueError(
            "Invalid value for argument `model`. Expected a functional or "
            f"Sequential keras.Model. Received: {type(model).__name__}"
        )
    if not model.built or not model.inputs:
        raise ValueError(
            "Invalid value for argument `model`. Expected a built model "
            "with defined inputs (give it a `keras.Input`, or call it once). "
            f"Received: model {model.name!r} without inputs"
        )
    folds = _folds(model)
    kept_float = []
    folded = {id(f) for pair in folds.values() for f in pair if f is not None}

    def clone(layer):
        if not isinstance(layer, keras.layers.Layer):  # an op: `x + y`
            name = type(layer).__name__
            exact = name in PRESERVING_OPS or not _float_outputs(layer)
            if scheme == "dynamic" or exact:
                return layer
            if name not in REQUANTIZING_OPS:
                keep_float(layer)
            return QuantizedOperation(layer, decay=decay)
        if isinstance(layer, keras.Model):
            raise ValueError(
                "Invalid model for `quantization_aware`. Expected a model "
                "of layers. Received: a nested model "
                f"{layer.name!r}; pass `quantization_aware` the nested "
                "model's layers in one functional model"
            )
        if isinstance(layer, WEIGHTED):
            _check_supported(layer)
            batch_norm, activation = folds.get(id(layer), (None, None))
            return QuantizedLayer(
                layer,
                batch_norm,
                scheme=scheme,
                decay=decay,
                activation=activation,
            )
        if isinstance(layer, keras.layers.MultiHeadAttention):
            return QuantizedAttention(layer, scheme=scheme, decay=decay)
        if isinstance(layer, keras.layers.Embedding) and scheme == "dynamic":
            return QuantizedEmbedding(layer, symmetric=True)
        if isinstance(layer, keras.layers.Embedding) and scheme == "int8":
            if layer.mask_zero:
                raise ValueError(
                    "Invalid model for `quantization_aware`. Expected "
                    "`Embedding` layers without `mask_zero` (LiteRT's "
                    "int8 ops take no masks). Received: layer "
                    f"{layer.name!r} with mask_zero=True"
                )
            return QuantizedEmbedding(layer)
        if id(layer) in folded:
            return FoldedAway(name=f"{layer.name}_folded")
        _check_no_hidden_weights(layer)
        if scheme == "dynamic" or isinstance(layer, PRESERVING):
            return layer
        if isinstance(layer, REQUANTIZING):
            return QuantizedOutput(layer, decay=decay)
        if isinstance(layer, keras.layers.BatchNormalization):
            raise ValueError(
                "Invalid model for `quantization_aware`. Expected each "
                "`BatchNormalization` right after a Dense or convolution "
                "without activation, read by nothing else, so that it "
                "folds into it as LiteRT folds it. Received: "
                f"layer {layer.name!r} elsewhere"
            )
        keep_float(layer)
        return QuantizedOutput(layer, decay=decay)

    def keep_float(layer):
        kind = type(layer).__name__
        if float_layers == "raise":
            raise ValueError(
                "Invalid model for `quantization_aware`. Expected layers "
                "LiteRT runs in int8 (Dense, Conv1D/2D, DepthwiseConv2D, "
                "EinsumDense, BatchNormalization after them, Add, "
                "Concatenate, activations, poolings, reshapes). Received: "
                f"layer {layer.name!r} of type {kind}; pass "
                "float_layers='warn' to run it in float between int8 "
                "tensors, or use scheme='dynamic' to round weights only"
            )
        kept_float.append(f"{layer.name!r} ({kind})")

    inner = keras.models.clone_model(model, clone_function=clone)
    if kept_float and float_layers == "warn":
        warnings.warn(
            f"`quantization_aware`: {len(kept_float)} layer(s) have no int8 "
            "simulation and run in float between int8 tensors (their "
            "inputs and outputs rounded to tracked ranges), as the int8 "
            "file will run them: " + ", ".join(kept_float[:6])
            + ". Pass float_layers='keep' to silence this, 'raise' to "
            "refuse them.",
            stacklevel=2,
        )
    if scheme == "dynamic":
        inner.name = f"{model.name}_quantization_aware"
        return inner
    inputs = [
        keras.Input(batch_shape=i.shape, dtype=i.dtype, name=_name(i))
        for i in model.inputs
    ]
    floats = {id(i) for i in _float_inputs(model)}
    fed = [
        ActivationQuantizer(decay, name=f"{_name(i)}_input_quantized")(t)
        if id(i) in floats
        else t
        for i, t in zip(model.inputs, inputs)
    ]
    outputs = inner(fed if len(fed) > 1 else fed[0])
    return keras.Model(
        inputs if len(inputs) > 1 else inputs[0],
        outputs,
        name=f"{model.name}_quantization_aware",
    )


def _name(tensor):
    return tensor.name.split(":")[0].replace("/", "_")


def quantizers(model):
    """Every `ActivationQuantizer` with a tracked range in a model (nested
    layers included; fixed ranges left out)."""
    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, ActivationQuantizer) and layer.fixed_range is None
    ]


def quantized_layers(model):
    """Every `QuantizedLayer` in a model."""
    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, QuantizedLayer)
    ]


def is_quantization_aware(model):
    """Whether a model holds layers of `quantization_aware`."""
    return bool(quantized_layers(model))


def scheme_of(model):
    """`"int8"`, `"dynamic"`, or None for a model that is not a twin."""
    layers = quantized_layers(model)
    if not layers:
        return None
    if any(layer.scheme == "int8" for layer in layers):
        return "int8"
    return "dynamic"


def freeze_ranges(model, frozen=True):
    """Stops (or, with `frozen=False`, resumes) the tracking of every
    activation range of a quantization-aware model.

    Args:
        model: A model from `quantization_aware` (or one holding it).
        frozen: Whether the ranges stay as they are from now on.

    Returns:
        The number of ranges frozen (or resumed).
    """
    found = quantizers(model)
    for quantizer in found:
        quantizer.frozen.assign(1.0 if frozen else 0.0)
    return len(found)


def check_ranges_seen(model):
    """Raises if an activation range never saw a training batch."""
    unseen = [
        q.name for q in quantizers(model) if float(q.batches.numpy()) == 0
    ]
    if unseen:
        raise ValueError(
            "Invalid model for int8 export: its activation ranges were "
            "never trained (train the quantization-aware model for at "
            "least one step first). Received: untrained ranges in "
            f"{unseen[:3]}"
        )


@contextlib.contextmanager
def constant_form(model):
    """Within this block the twin's ranges and rounded kernels are
    constants, the form the TFLite converter reads."""
    found, layers = quantizers(model), quantized_layers(model)
    tables = [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, QuantizedEmbedding)
    ]
    try:
        for table in tables:
            values = keras.ops.convert_to_numpy(table.layer.embeddings)
            table.constant_range = (float(values.min()), float(values.max()))
        for q in found:
            q.constant_range = (
                float(q.range_min.numpy()),
                float(q.range_max.numpy()),
            )
        for layer in layers:
            layer.constant_kernel = np.asarray(
                keras.ops.convert_to_numpy(layer.quantized_kernel())
            )
        yield
    finally:
        for q in found:
            q.constant_range = None
        for layer in layers:
            layer.constant_kernel = None
        for table in tables:
            table.constant_range = None


def _final_quantizer(layer):
    if isinstance(layer, QuantizedLayer):
        return layer.activation_quantizer or layer.output_quantizer
    if isinstance(layer, (QuantizedOutput, QuantizedOperation)):
        return layer.output_quantizer
    if isinstance(layer, ActivationQuantizer):
        return layer
    return None


def output_steps(model):
    """The int8 step of each output of an `"int8"` twin (`(max - min) /
    255` of the range it is rounded to last), or None where unknown."""
    steps = []
    for output in model.outputs:
        tensor, quantizer = output, None
        for _ in range(64):  # through nested models and reshapes
            layer = _producer(tensor)
            if isinstance(layer, keras.Model):
                index = layer.outputs if len(layer.outputs) else []
                position = tensor._keras_history[2]
                tensor = index[position]
                continue
            quantizer = _final_quantizer(layer)
            if quantizer is not None or not isinstance(layer, PRESERVING):
                break
            tensor = layer._inbound_nodes[0].input_tensors[0]
        if quantizer is None:
            steps.append(None)
            continue
        low, high = quantizer.fixed_range or (
            float(quantizer.range_min.numpy()),
            float(quantizer.range_max.numpy()),
        )
        steps.append((max(high, 0.0) - min(low, 0.0)) / 255.0)
    return steps


class FreezeRanges(keras.callbacks.Callback):
    """Freezes a quantization-aware model's activation ranges when an
    epoch begins (see `freeze_ranges`): the last epochs then train the
    weights for the ranges the file will hold.

    Args:
        model: The quantization-aware model (the twin, or a `Distiller`
            whose student it is).
        epoch: The 0-based epoch from which the ranges stay as they are.

    Example:

    ```python
    freeze = keras_distill.quantization.FreezeRanges(twin, epoch=1)
    distiller.fit(train_ds, epochs=2, callbacks=[freeze], verbose=0)
    ```
    """

    def __init__(self, model, epoch):
        super().__init__()
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(
                "Invalid value for argument `epoch`. Expected an int >= 0. "
                f"Received: epoch={epoch!r}"
            )
        self.target = model
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            freeze_ranges(self.target)
