"""Divergences between the teacher's and the student's distributions over
the last axis (classes, or a vocabulary of tokens), per position.

Every function here works in float32 on log-probabilities from
`log_softmax` (a log-sum-exp form), so a vocabulary of 65,536 tokens in
bfloat16 loses nothing to `log(softmax(...))` of rounded values.

A teacher may also come as its top-k logits (a `TeacherCache` built with
`top_k=k`): `top_k_log_probs` turns both models' distributions into
distributions over the teacher's k tokens, and the divergences apply to
those. Its two forms, for the teacher's top-k tokens `K` at position `n`,
teacher logits `v_i` (i in K) and `Z` the teacher's full log-normaliser
(stored with the cache):

```
"rest":         p_i = exp(v_i - Z),  p_rest = Σ_{j∉K} exp(v_j - Z)
                q_i = softmax(s)_i,  q_rest = Σ_{j∉K} softmax(s)_j
                (k + 1 buckets; p_rest is stored with the cache, q_rest
                is summed from the student's logits, so neither is a
                rounded difference; at T ≠ 1 both bucket distributions
                are tempered: p ∝ p^(1/T))
"renormalized": p_i = softmax(v / T)_i over K,
                q_i = softmax(s / T)_i renormalised over K
                (k buckets)
```

Both equal the full divergence at k = V (the rest is empty); "rest" keeps
how much mass lies outside the top k, "renormalized" drops it.
"""

import math

import tensorflow as tf
from keras import ops

from keras_distill._validation import check_choice

TOP_K_VALUES = "top_k_values"
TOP_K_INDICES = "top_k_indices"
LOG_NORMALIZER = "log_normalizer"
LOG_REST = "log_rest"
TOP_K_FORMS = ("rest", "renormalized")
# log(0) stand-in: exp() of it is 0 in float32, and 0 · it is 0.
_LOG_ZERO = -1e4
# The student's rest above exp(-60) of its mass in every row of a batch:
# the one-pass form of the rest (`student_top_k_log_probs`) is exact.
_FAST_REST = -60.0


def is_top_k(teacher):
    """Whether teacher outputs come as top-k logits (a dict)."""
    return isinstance(teacher, dict) and TOP_K_VALUES in teacher


def log_probs(logits, temperature=1.0):
    """`log_softmax(logits / T)` over the last axis, in float32."""
    t = ops.cast(temperature, "float32")
    return ops.log_softmax(ops.cast(logits, "float32") / t, axis=-1)


def forward_kl(log_p, log_q):
    """`KL(p || q) = Σ p (log p - log q)` per position."""
    return ops.sum(ops.exp(log_p) * (log_p - log_q), axis=-1)


def reverse_kl(log_p, log_q):
    """`KL(q || p)`: the student's distribution first (mode seeking)."""
    return forward_kl(log_q, log_p)


def generalized_jsd(log_p, log_q, beta):
    """The generalized Jensen-Shannon divergence of GKD, per position.

    Formula (Agarwal et al., ICLR 2024):

    ```
    m = β p + (1 - β) q
    JSD(β) = β KL(p || m) + (1 - β) KL(q || m)
    ```

    with `log m` taken as a log-sum-exp of `log β + log p` and
    `log(1 - β) + log q`. At the two ends it is defined as the limits
    GKD uses: `β = 0` is the forward KL `KL(p || q)`, `β = 1` the reverse
    KL `KL(q || p)` (`JSD(β) / β → KL(p || q)` as β → 0).

    Args:
        log_p: The teacher's log-probabilities.
        log_q: The student's log-probabilities.
        beta: A Python float in [0, 1].

    Returns:
        The divergence per position (the last axis summed).
    """
    if beta == 0:
        return forward_kl(log_p, log_q)
    if beta == 1:
        return reverse_kl(log_p, log_q)
    log_m = ops.logsumexp(
        ops.stack([log_p + math.log(beta), log_q + math.log(1.0 - beta)]),
        axis=0,
    )
    return beta * forward_kl(log_p, log_m) + (1.0 - beta) * forward_kl(
        log_q, log_m
    )


def top_k_log_probs(teacher, student_logits, temperature=1.0, form="rest"):
    """Both models' log-probabilities over the teacher's top-k buckets.

    Args:
        teacher: A dict of `top_k_values` (`(..., k)`, the teacher's k
            largest logits), `top_k_indices` (`(..., k)` int) and
            `log_normalizer` (`(...)`, the teacher's full log-sum-exp).
        student_logits: The student's logits `(..., V)`.
        temperature: The softmax temperature.
        form: `"rest"` or `"renormalized"` (see the module docstring).

    Returns:
        `(log_p, log_q)`, float32 of shape `(..., k + 1)` ("rest") or
        `(..., k)` ("renormalized").
    """
    t = ops.cast(temperature, "float32")
    values = ops.cast(teacher[TOP_K_VALUES], "float32")
    indices = ops.cast(teacher[TOP_K_INDICES], "int32")
    student = ops.cast(student_logits, "float32")
    if form == "renormalized":
        log_p = ops.log_softmax(values / t, axis=-1)
        # The k logits first, then the temperature: no pass over the
        # vocabulary (`ops.take_along_axis` builds index grids: 4x slower
        # at V = 2,048, k = 32, forward and backward).
        rank = len(student.shape)
        gathered = tf.gather(student, indices, batch_dims=rank - 1) / t
        return log_p, ops.log_softmax(gathered, axis=-1)
    check_choice("top_k_form", form, TOP_K_FORMS)
    z = ops.cast(teacher[LOG_NORMALIZER], "float32")[..., None]
    log_rest = ops.cast(teacher[LOG_REST], "float32")[..., None]
    log_p = ops.concatenate([values - z, log_rest], axis=-1)
    top, rest = student_top_k_log_probs(student, indices)
    log_q = ops.concatenate([top, rest[..., None]], axis=-1)
    log_p, log_q = ops.maximum(log_p, _LOG_ZERO), ops.maximum(log_q, _LOG_ZERO)
    # Tempering: p^(1/T), renormalised over the buckets (exact at T = 1).
    return (
        ops.log_softmax(log_p / t, axis=-1),
        ops.log_softmax(log_q / t, axis=-1),
    )


def _coordinates(indices):
    """`(rows, k, 2)` `(row, index)` pairs of `(rows, k)` indices."""
    rows, k = tf.shape(indices)[0], tf.shape(indices)[1]
    row = tf.repeat(tf.range(rows)[:, None], k, axis=1)
    return tf.stack([row, indices], axis=-1)


def _outside(logits, indices):
    """The logits with -1e30 at the indices: the tokens outside them."""
    return tf.tensor_scatter_nd_update(
        logits, _coordinates(indices), tf.fill(tf.shape(indices), -1e30)
    )


def _top_k_and_rest(logits, indices):
    """`(log q at indices, log q_rest, logsumexp over every token)` of
    `(rows, V)` float32 logits, the rest's log-sum-exp taken over the
    tokens outside the indices on their own (exact at any rest mass)."""
    lse = tf.reduce_logsumexp(logits, axis=-1)
    lse_out = tf.reduce_logsumexp(_outside(logits, indices), axis=-1)
    top = tf.gather(logits, indices, batch_dims=1) - lse[:, None]
    rest = tf.maximum(lse_out - lse, _LOG_ZERO)
    return top, rest, lse


def _top_k_and_rest_gradient(logits, indices, rest, lse, upstream):
    """The gradient of `(top, rest)` of `_top_k_and_rest` with respect to
    the logits: `Σ_i g_i (e_i - q) + g_rest (q_out - q)`, `q` the softmax,
    `q_out` the softmax over the tokens outside the indices (0 on them),
    and no rest term where the rest was clipped (nothing left)."""
    upstream_top, upstream_rest = upstream
    g_rest = tf.where(rest > _LOG_ZERO, upstream_rest, 0.0)
    q = tf.exp(logits - lse[:, None])
    outside = _outside(logits, indices)
    lse_out = tf.reduce_logsumexp(outside, axis=-1)  # `rest` may be clipped
    q_out = tf.exp(outside - lse_out[:, None])
    total = tf.reduce_sum(upstream_top, axis=-1) + g_rest
    gradient = g_rest[:, None] * q_out - total[:, None] * q
    return tf.tensor_scatter_nd_add(
        gradient, _coordinates(indices), upstream_top
    )


def _one_pass_top_k_and_rest(logits, indices):
    """`_top_k_and_rest` from one exponential of the logits: the rest's sum
    is taken on the same scale as the whole (the row's largest logit), so
    it is exact where the rest holds more than `exp(_FAST_REST)` of the
    mass (its terms are then far above float32's smallest numbers)."""
    top_max = tf.reduce_max(logits, axis=-1, keepdims=True)
    scaled = tf.exp(logits - top_max)
    inside = tf.tensor_scatter_nd_update(
        tf.zeros_like(logits),
        _coordinates(indices),
        tf.ones(tf.shape(indices), logits.dtype),
    )
    lse = tf.math.log(tf.reduce_sum(scaled, axis=-1)) + top_max[:, 0]
    lse_out = tf.math.log(tf.reduce_sum(scaled * (1.0 - inside), axis=-1))
    top = tf.gather(logits, indices, batch_dims=1) - lse[:, None]
    rest = tf.maximum(lse_out + top_max[:, 0] - lse, _LOG_ZERO)
    return top, rest, lse


def _one_pass_gradient(logits, indices, rest, lse, upstream):
    """`_top_k_and_rest_gradient` where every rest exceeds `_FAST_REST`:
    `q_out = q · exp(-rest)` off the indices, so one exponential. The
    indices' entries are written, not added: they must be distinct, as
    a teacher's top k are."""
    upstream_top, upstream_rest = upstream
    total = tf.reduce_sum(upstream_top, axis=-1) + upstream_rest
    q = tf.exp(logits - lse[:, None])
    gradient = q * (upstream_rest * tf.exp(-rest) - total)[:, None]
    at_indices = upstream_top - total[:, None] * tf.gather(
        q, indices, batch_dims=1
    )
    return tf.tensor_scatter_nd_update(
        gradient, _coordinates(indices), at_indices
    )


def _forward(logits, indices):
    """`(top, rest, lse)`: one pass where every row's rest is above
    `_FAST_REST`, else the rest summed on its own scale."""
    fast = _one_pass_top_k_and_rest(logits, indices)
    return tf.cond(
        tf.reduce_all(fast[1] > _FAST_REST),
        lambda: fast,
        lambda: _top_k_and_rest(logits, indices),
    )


def _backward(logits, indices, rest, lse, upstream_top, upstream_rest):
    """The gradient of `_forward`'s `(top, rest)`, by the same choice."""
    upstream = (upstream_top, upstream_rest)
    return tf.cond(
        tf.reduce_all(rest > _FAST_REST),
        lambda: _one_pass_gradient(logits, indices, rest, lse, upstream),
        lambda: _top_k_and_rest_gradient(logits, indices, rest, lse, upstream),
    )


def student_top_k_log_probs(logits, indices):
    """The student's log-probabilities of the teacher's top-k tokens and
    of the rest, `(log q_i for i in indices, log Σ_{j ∉ indices} q_j)`.

    The rest is summed directly over the tokens outside the indices
    (never `log(1 - Σ q_i)`, which loses a small rest to rounding), from
    the same exponential of the logits as the whole log-sum-exp; where a
    row's rest falls below `exp(-60)` of its mass, the batch takes the
    rest's own log-sum-exp instead (exact at any rest). The gradient is
    written out from the forward pass's log-sum-exp: one more
    exponential. Inside a compiled step both directions run as one XLA
    program each, so the vocabulary is read a few times instead of once
    per elementary op.

    Args:
        logits: float32 logits `(..., V)`.
        indices: int `(..., k)` distinct token ids.

    Returns:
        float32 `(..., k)` and `(...)`.
    """
    logits = tf.cast(logits, "float32")
    indices = tf.cast(indices, "int32")
    leading = tf.shape(logits)[:-1]
    flat = tf.reshape(logits, (-1, logits.shape[-1]))
    flat_indices = tf.reshape(indices, (-1, indices.shape[-1]))

    forward, backward = _forward, _backward
    if not tf.executing_eagerly():
        forward = tf.function(forward, jit_compile=True)
        backward = tf.function(backward, jit_compile=True)

    @tf.custom_gradient
    def both(flat):
        top, rest, lse = forward(flat, flat_indices)

        def gradient(upstream_top, upstream_rest):
            return backward(
                flat, flat_indices, rest, lse, upstream_top, upstream_rest
            )

        return (top, rest), gradient

    top, rest = both(flat)
    top_shape = tf.concat([leading, tf.shape(indices)[-1:]], axis=0)
    return tf.reshape(top, top_shape), tf.reshape(rest, leading)


def top_k_teacher(logits, k):
    """The top-k form of teacher logits `(..., V)`, as tensors: what a
    `TeacherCache(top_k=k)` holds, computed on the fly.

    Args:
        logits: `(..., V)` teacher logits.
        k: How many of the largest logits to keep (at most V).

    Returns:
        A dict: `top_k_values` (float32 `(..., k)`), `top_k_indices`
        (int32), `log_normalizer` (float32 `(...)`, the log-sum-exp of all
        V logits) and `log_rest` (float32, the log of the probability
        outside the top k, summed directly; `_LOG_ZERO` when empty).
    """
    logits = ops.cast(logits, "float32")
    k = min(int(k), int(logits.shape[-1]))
    values, indices = tf.math.top_k(logits, k=k)
    return {
        TOP_K_VALUES: values,
        TOP_K_INDICES: indices,
        LOG_NORMALIZER: ops.logsumexp(logits, axis=-1),
        LOG_REST: rest_log_mass(logits, indices),
    }


def rest_log_mass(logits, indices):
    """`log Σ_{j ∉ indices} softmax(logits)_j` per position, summed
    directly (not `log(1 - Σ_indices)`); `_LOG_ZERO` when nothing is left.

    Args:
        logits: `(..., V)` logits.
        indices: `(..., k)` distinct token indices.

    Returns:
        float32 `(...)`.
    """
    logits = ops.cast(logits, "float32")
    indices = ops.cast(indices, "int32")
    vocab, k = logits.shape[-1], indices.shape[-1]
    flat = ops.reshape(logits, (-1, vocab))
    rows = ops.shape(flat)[0]
    row = ops.repeat(ops.arange(rows, dtype="int32")[:, None], k, axis=1)
    coords = ops.stack(
        [ops.reshape(row, (-1,)), ops.reshape(indices, (-1,))], axis=1
    )
    taken = ops.scatter(coords, ops.ones((rows * k,), "float32"), (rows, vocab))
    outside = ops.where(taken > 0, -1e30, flat)
    rest = ops.logsumexp(outside, axis=-1) - ops.logsumexp(flat, axis=-1)
    rest = ops.maximum(rest, _LOG_ZERO)
    return ops.reshape(rest, ops.shape(logits)[:-1])
