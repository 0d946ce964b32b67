"""The sampling loop of `keras_distill.on_policy`: seeded, stateless,
a fixed window, so it compiles (with XLA too)."""

import numpy as np
import tensorflow as tf

_TINY = float(np.finfo(np.float32).tiny)


def step_seed(seed, index):
    """The stateless seed of one draw: `seed` (shape `(2,)`, int) with
    `index` folded in. Index 0 draws the prompt lengths; index `i + 1`
    the noise of the `i`-th new token."""
    return tf.random.experimental.stateless_fold_in(
        tf.cast(seed, "int64"), tf.cast(index, "int64")
    )


def training_seed(seed, step):
    """The stateless seed of a training step: `[seed, 0]` with the
    optimizer's `step` and the replica's index folded in."""
    context = tf.distribute.get_replica_context()
    replica = 0 if context is None else context.replica_id_in_sync_group
    base = tf.constant([seed, 0], "int64")
    return step_seed(step_seed(base, step), replica)


def gumbel_noise(seed, index, shape):
    """The Gumbel noise `-log(-log(u))` added to the logits of the
    `index - 1`-th new token, `u` uniform in (0, 1) from
    `step_seed(seed, index)` (float32)."""
    u = tf.random.stateless_uniform(
        shape, seed=step_seed(seed, index), minval=_TINY, maxval=1.0
    )
    return -tf.math.log(-tf.math.log(u))


def choose(logits, temperature, seed, index):
    """The next token of each row: the argmax of `logits / temperature`
    plus Gumbel noise (a sample of the softened distribution), or of the
    logits alone where `temperature` is 0 (greedy)."""
    logits = tf.cast(logits, "float32")
    if temperature > 0:
        noise = gumbel_noise(seed, index, tf.shape(logits))
        logits = logits / temperature + noise
    return tf.argmax(logits, axis=-1, output_type=tf.int32)


def continue_tokens(
    logits_fn, tokens, prompts, new_tokens, temperature, seed, mask=None
):
    """Writes `new_tokens` sampled tokens after each row's prompt.

    Args:
        logits_fn: `(tokens, mask) -> (rows, window, vocabulary)` logits
            of a causal model (`mask` is None without a padding mask).
        tokens: `(rows, window)` int32 token ids.
        prompts: `(rows,)` int32 prompt lengths (at least 1; a prompt plus
            `new_tokens` fits the window).
        new_tokens: How many tokens to write (a Python int).
        temperature: 0 (greedy) or the sampling temperature.
        seed: A stateless seed, shape `(2,)`.
        mask: Optional `(rows, window)` padding mask (bool or 0/1) of the
            prompts; the result marks the prompt and generated positions.

    Returns:
        `(tokens, mask)`: the prompt, then the new tokens at positions
        `prompt ... prompt + new_tokens - 1` (the positions after them
        unchanged), and the mask (None if `mask` was None).
    """
    positions = tf.range(tf.shape(tokens)[1])[None, :]
    prompts = tf.cast(prompts, "int32")
    in_prompt = positions < prompts[:, None]
    if mask is not None:
        in_prompt = tf.logical_and(tf.cast(mask, "bool"), in_prompt)

    def filled(i):
        written = tf.logical_and(
            positions >= prompts[:, None], positions < (prompts + i)[:, None]
        )
        return tf.logical_or(in_prompt, written)

    def as_mask(i):
        return None if mask is None else tf.cast(filled(i), mask.dtype)

    def body(i, tokens):
        logits = logits_fn(tokens, as_mask(i))
        last = tf.gather(logits, prompts + i - 1, axis=1, batch_dims=1)
        chosen = choose(last, temperature, seed, i + 1)
        at = tf.equal(positions, (prompts + i)[:, None])
        return i + 1, tf.where(at, chosen[:, None], tokens)

    _, tokens = tf.while_loop(
        lambda i, _: i < new_tokens,
        body,
        (tf.constant(0), tf.cast(tokens, "int32")),
    )
    return tokens, as_mask(new_tokens)
