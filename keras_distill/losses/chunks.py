"""Token divergences over chunks of positions, in the memory of one
logits tensor.

A distillation loss on a large vocabulary is dominated by its full-size
intermediates: log-softmaxes, exponentials and their gradients, each as
large as the logits. `per_position` computes a per-position divergence a
chunk of positions at a time, one chunk after the other, keeping only
the values (one number per position). Its backward pass goes over the
chunks again: each chunk recomputes its part of the loss and takes its
gradient, scaled by that chunk's upstream weights, and writes it into one
buffer of the logits' shape and dtype. The loss' extra memory is that
gradient, which cannot be avoided, plus one chunk's working space; and
nothing of the loss' size stays alive between the forward and the
backward pass.

Every chunk runs the unchunked functions on its rows and differentiates
them as the unchunked form is differentiated (the upstream gradient
applied inside, in float32, and the result cast once to the logits'
dtype), so values and gradients equal the unchunked form's up to the
order of float32 operations, for any divergence written per position
(forward KL, reverse KL, JSD(β), the top-k forms), in any float dtype.

Inside a `tf.function` (in `fit`, `evaluate`) both loops are compiled
with XLA, which writes each chunk's rows into the buffer in place
(TensorFlow's own kernels copy the whole buffer at each write). XLA
compiles once per input shape: batches of varying sequence lengths
compile once per length. Called eagerly, the same loops run uncompiled,
with the same numbers but without the saving. `chunk_size=None` on a
loss turns all of this off.

The teacher's outputs get no gradient (a frozen teacher's never do); a
teacher whose outputs a tape records is compared unchunked.
"""

import numbers

import tensorflow as tf
from keras import ops

AUTO = "auto"
# Under `"auto"`, logits over at least this many classes are chunked
# (language models' vocabularies; not classifiers').
AUTO_MIN_VOCAB = 16384
# A chunk holds about this many logits (float32: 4 MiB): 4 positions of
# a 262,144-token vocabulary, 32 of 32,768. Its working space, about
# eight buffers of its size, is what the loss adds above its gradient.
CHUNK_ELEMENTS = 2**20


def check_chunk_size(chunk_size):
    """Validates a loss' `chunk_size` argument; returns it.

    Raises:
        ValueError: If it is not `"auto"`, None or a positive int.
    """
    if isinstance(chunk_size, numbers.Integral) and not isinstance(
        chunk_size, bool
    ):
        if chunk_size > 0:
            return int(chunk_size)
    elif chunk_size is None or chunk_size == AUTO:
        return chunk_size
    raise ValueError(
        "Invalid value for argument `chunk_size`. Expected 'auto' (chunk "
        "large logits), None (never chunk) or a positive int (positions "
        f"per chunk). Received: chunk_size={chunk_size!r}"
    )


def rows_per_chunk(chunk_size, vocab):
    """Positions per chunk for logits over `vocab` classes, or None for
    the unchunked form.

    Args:
        chunk_size: `"auto"`, None or a positive int.
        vocab: The logits' last axis (an int, or None if unknown).

    Returns:
        A positive int, or None.
    """
    if chunk_size is None or vocab is None:
        return None
    if chunk_size != AUTO:
        return int(chunk_size)
    if vocab < AUTO_MIN_VOCAB:
        return None
    return max(1, CHUNK_ELEMENTS // vocab)


def per_position(function, teacher, student_logits, temperature, rows):
    """A per-position divergence computed `rows` positions at a time.

    Args:
        function: `function(teacher, student, t) -> (value, target)` on a
            chunk: `teacher` as given (a tensor or a dict of top-k
            tensors) and `student`, both cut to the chunk's positions
            (flattened to `(positions, ...)`), `t` the temperature as a
            float32 tensor. `value` is the per-position divergence
            returned; `target` the per-position quantity whose gradient
            is used (usually `value` itself; `soft_kl` returns its
            cancellation-free value with the textbook form's gradient).
        teacher: The teacher's logits `(..., vocab)` or a dict of top-k
            tensors with the same leading axes.
        student_logits: The student's logits `(..., vocab)`, any float
            dtype.
        temperature: The temperature (float or variable).
        rows: Positions per chunk (a positive int).

    Returns:
        float32 values of shape `student_logits.shape[:-1]`, differentiable
        with respect to `student_logits` (not the teacher).
    """
    student_logits = tf.convert_to_tensor(student_logits)
    leading = tf.shape(student_logits)[:-1]
    student = tf.reshape(student_logits, (-1, student_logits.shape[-1]))
    count = tf.shape(student)[0]
    rank = len(student_logits.shape) - 1

    def flat(x):
        x = tf.convert_to_tensor(x)
        return tf.reshape(x, tf.concat([[count], tf.shape(x)[rank:]], 0))

    parts = [flat(x) for x in tf.nest.flatten(teacher)]
    t = tf.cast(temperature, "float32")
    values_loop = _chunk_loop(function, teacher, rows, gradient=False)
    gradient_loop = _chunk_loop(function, teacher, rows, gradient=True)
    if not tf.executing_eagerly():
        values_loop = tf.function(values_loop, jit_compile=True)
        gradient_loop = tf.function(gradient_loop, jit_compile=True)

    @tf.custom_gradient
    def chunked(student):
        def gradient(upstream):
            return gradient_loop(student, t, upstream, *parts)

        return values_loop(student, t, None, *parts), gradient

    return tf.reshape(chunked(student), leading)


def _chunk_loop(function, structure, rows, gradient):
    """A loop over chunks: `(student, t, upstream, *teacher_parts) ->`
    the values (`gradient` False; `upstream` unused) or the gradient with
    respect to `student` of `Σ upstream · target` (`gradient` True).

    Every chunk has `rows` positions, a static shape: the last one ends
    at the last position (overlapping the one before, whose rows it
    recomputes to the same numbers), and with fewer positions than
    `rows` the last position repeats.
    """

    def loop(student, t, upstream, *parts):
        count = tf.shape(student)[0]
        chunks = (count + rows - 1) // rows
        if gradient:
            out = tf.zeros_like(student)
        else:
            out = tf.zeros((count,), "float32")

        def body(i, out):
            start = tf.minimum(i * rows, tf.maximum(count - rows, 0))
            index = tf.minimum(start + tf.range(rows), count - 1)
            chunk = tf.gather(student, index)
            teacher = tf.nest.pack_sequence_as(
                structure, [tf.gather(p, index) for p in parts]
            )
            if gradient:
                with tf.GradientTape() as tape:
                    tape.watch(chunk)
                    _, target = function(teacher, chunk, t)
                weight = tf.cast(tf.gather(upstream, index), target.dtype)
                rows_out = tape.gradient(target, chunk, weight)
            else:
                value, _ = function(teacher, chunk, t)
                rows_out = tf.cast(value, "float32")
            rows_out = tf.cast(rows_out, out.dtype)
            return i + 1, tf.tensor_scatter_nd_update(
                out, index[:, None], rows_out
            )

        return tf.while_loop(
            lambda i, _: i < chunks,
            body,
            (tf.constant(0), out),
            parallel_iterations=1,
        )[1]

    return loop


def _recording(tensors):
    """Whether a gradient tape records operations on any of `tensors`."""
    try:
        from tensorflow.python.eager import record
    except ImportError:  # pragma: no cover - a TensorFlow without it
        return False  # teachers are frozen
    tensors = [tf.convert_to_tensor(t) for t in tensors if tf.is_tensor(t)]
    return bool(tensors) and record.should_record_backprop(tensors)


def chunked_or_not(function, teacher, student_logits, temperature, rows):
    """`per_position` over chunks of `rows` positions, or `function` on
    all positions at once when `rows` is None (its `value` with the
    gradient of its `target`)."""
    if rows is not None and not _recording(tf.nest.flatten(teacher)):
        return per_position(
            function, teacher, student_logits, temperature, rows
        )
    value, target = function(
        teacher, student_logits, ops.cast(temperature, "float32")
    )
    if value is target:
        return value
    return target + ops.stop_gradient(value - target)
