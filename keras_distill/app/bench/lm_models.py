"""The decoder-only Transformer of `keras-distill bench lm`: teacher and
student differ only in their sizes."""

import keras


@keras.saving.register_keras_serializable(package="keras_distill")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned embedding of each position to its features.

    Args:
        length: The number of positions.
        seed: Optional initializer seed.
        **kwargs: Passed on to `keras.layers.Layer`.
    """

    def __init__(self, length, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.length = length
        self.seed = seed

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            shape=(self.length, input_shape[-1]),
            initializer=keras.initializers.GlorotUniform(seed=self.seed),
            name="embeddings",
        )

    def call(self, features):
        steps = keras.ops.shape(features)[1]
        return features + self.embeddings[None, :steps]

    def get_config(self):
        config = super().get_config()
        config.update(length=self.length, seed=self.seed)
        return config


def decoder_lm(vocabulary, window, dim, layers, heads, seed, name):
    """A decoder-only Transformer: token and position embeddings, `layers`
    pre-norm blocks of causal self-attention and an MLP, logits out."""
    init = keras.initializers.GlorotUniform(seed=seed)
    tokens = keras.Input((window,), dtype="int32", name="tokens")
    h = keras.layers.Embedding(vocabulary, dim, embeddings_initializer=init)(
        tokens
    )
    h = PositionEmbedding(window, seed=seed)(h)
    for i in range(layers):
        a = keras.layers.LayerNormalization(name=f"{name}_ln{i}a")(h)
        a = keras.layers.MultiHeadAttention(
            heads, dim // heads, kernel_initializer=init, name=f"{name}_att{i}"
        )(a, a, use_causal_mask=True)
        h = h + a
        m = keras.layers.LayerNormalization(name=f"{name}_ln{i}b")(h)
        m = keras.layers.Dense(4 * dim, "gelu", kernel_initializer=init)(m)
        h = h + keras.layers.Dense(dim, kernel_initializer=init)(m)
    h = keras.layers.LayerNormalization(name=f"{name}_ln")(h)
    logits = keras.layers.Dense(vocabulary, kernel_initializer=init)(h)
    return keras.Model(tokens, logits, name=name)
