"""`QuantizedAttention`: a `MultiHeadAttention` whose projections compute
as LiteRT's fully connected ops of the exported file compute them."""

import keras

from keras_distill._validation import check_choice
from keras_distill.quantization._layers import SCHEMES
from keras_distill.quantization._layers import ActivationQuantizer
from keras_distill.quantization._layers import QuantizedLayer
from keras_distill.quantization._layers import _Wrapper

# The attention layer's projections, in the order they are wrapped.
PROJECTIONS = ("_query_dense", "_key_dense", "_value_dense", "_output_dense")


@keras.saving.register_keras_serializable(package="keras_distill")
class QuantizedAttention(_Wrapper):
    """A `keras.layers.MultiHeadAttention` computing with its query, key,
    value and output projections quantized (each a `QuantizedLayer`
    sharing the attention layer's variables).

    In the file the projections are fully connected ops with int8 weights
    per output unit (the head and the unit within it, flattened); under
    the `"dynamic"` scheme each token's features are rounded as they enter
    a projection, as the runtime does. The attention itself (the scores,
    the mask, the softmax, the weighted sum) stays float, as the
    dynamic-range file keeps it.

    Args:
        layer: The `MultiHeadAttention` layer to wrap.
        scheme: `"dynamic"` (the only scheme with an attention layer).
        decay: Kept for the twin's other layers' signature.
        **kwargs: `keras.layers.Layer` arguments.
    """

    def __init__(self, layer, scheme="dynamic", decay=0.99, **kwargs):
        super().__init__(layer, **kwargs)
        check_choice("scheme", scheme, SCHEMES)
        self.scheme = scheme
        self.decay = decay
        self.projections = None
        self.core_quantizer = None
        if scheme == "int8":
            self.core_quantizer = ActivationQuantizer(
                decay, name=f"{self.name}_core"
            )

    def build(self, query_shape, value_shape, key_shape=None):
        if not self.layer.built:
            self.layer.build(query_shape, value_shape, key_shape)
        self.projections = [
            QuantizedLayer(
                getattr(self.layer, name), scheme=self.scheme, decay=self.decay
            )
            for name in PROJECTIONS
        ]
        if self.core_quantizer is not None:
            shape = self.layer.query_dense.compute_output_shape(query_shape)
            self.core_quantizer.build(shape)

    def call(
        self,
        query,
        value,
        key=None,
        query_mask=None,
        value_mask=None,
        key_mask=None,
        attention_mask=None,
        return_attention_scores=False,
        training=None,
        use_causal_mask=False,
    ):
        attention = self.layer
        originals = [getattr(attention, name) for name in PROJECTIONS]
        # The attention layer's own computation, with the quantized
        # projections in place of its sublayers for the call (set without
        # Keras' attribute tracking, and put back after).
        swapped = list(self.projections)
        if self.core_quantizer is not None:
            # Under "int8" the float attention's output is rounded to its
            # own range before the int8 output projection reads it.
            output = swapped[-1]
            core = self.core_quantizer

            def swapped_output(inputs):
                return output(core(inputs, training=training))

            swapped[-1] = swapped_output
        for name, projection in zip(PROJECTIONS, swapped):
            object.__setattr__(attention, name, projection)
        try:
            return attention.call(
                query,
                value,
                key=key,
                query_mask=query_mask,
                value_mask=value_mask,
                key_mask=key_mask,
                attention_mask=attention_mask,
                return_attention_scores=return_attention_scores,
                training=training,
                use_causal_mask=use_causal_mask,
            )
        finally:
            for name, original in zip(PROJECTIONS, originals):
                object.__setattr__(attention, name, original)

    def compute_output_shape(self, query_shape, value_shape, key_shape=None):
        return self.layer.compute_output_shape(
            query_shape, value_shape, key_shape
        )

    def compute_output_spec(self, *args, **kwargs):
        return self.layer.compute_output_spec(*args, **kwargs)

    def get_config(self):
        return {
            **super().get_config(),
            "scheme": self.scheme,
            "decay": self.decay,
        }
