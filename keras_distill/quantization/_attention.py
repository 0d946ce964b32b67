"""`QuantizedAttention`: a `MultiHeadAttention` whose projections compute
as LiteRT's fully connected ops of the exported file compute them."""

import keras

from keras_distill.quantization._layers import QuantizedLayer
from keras_distill.quantization._layers import _Wrapper

# The attention layer's projections, in the order they are wrapped.
PROJECTIONS = ("_query_dense", "_key_dense", "_value_dense", "_output_dense")


@keras.saving.register_keras_serializable(package="keras_distill")
class QuantizedAttention(_Wrapper):
    """A `keras.layers.MultiHeadAttention` computing with its query, key,
    value and output projections (and its gate's, with `use_gate=True`)
    quantized, each a `QuantizedLayer` sharing the attention layer's
    variables.

    In the file the projections are fully connected ops with int8 weights
    per output unit (the head and the unit within it, flattened), and
    each token's features are rounded as they enter a projection, as the
    runtime does; the attention itself (the scores, the mask, the
    softmax, the weighted sum) stays float, as the dynamic-range file
    keeps it. Only the `"dynamic"` scheme simulates attention: the
    full-integer converter quantizes parts of the attention core on its
    own, which the twin cannot follow.

    Args:
        layer: The `MultiHeadAttention` layer to wrap.
        scheme: `"dynamic"`.
        decay: Unused (the signature of the twin's other layers).
        **kwargs: `keras.layers.Layer` arguments.

    Raises:
        ValueError: For another scheme, naming the layer.
    """

    def __init__(self, layer, scheme="dynamic", decay=0.99, **kwargs):
        super().__init__(layer, **kwargs)
        if scheme != "dynamic":
            raise ValueError(
                "Invalid model for `quantization_aware` with scheme="
                f"{scheme!r}. Expected layers the int8 twin simulates. "
                f"Received: layer {layer.name!r} of type "
                f"{type(layer).__name__} (the full-integer twin does not "
                "simulate attention); use scheme='dynamic' (int8 weights, "
                "the dynamic-range file)"
            )
        self.scheme = scheme
        self.decay = decay
        self.projections = None

    def build(self, query_shape, value_shape, key_shape=None):
        if not self.layer.built:
            self.layer.build(query_shape, value_shape, key_shape)
        self.projections = [
            QuantizedLayer(
                getattr(self.layer, name), scheme=self.scheme, decay=self.decay
            )
            for name in self._wrapped()
        ]

    def _wrapped(self):
        """The attention layer's dense sublayers, its gate's if it has
        one."""
        gate = ("_gate_dense",) if getattr(self.layer, "_use_gate", 0) else ()
        return PROJECTIONS + gate

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
        names = self._wrapped()
        originals = [getattr(attention, name) for name in names]
        # The attention layer's own computation, with the quantized
        # projections in place of its sublayers for the call (set without
        # Keras' attribute tracking, and put back after).
        for name, projection in zip(names, self.projections):
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
            for name, original in zip(names, originals):
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
