"""Token divergences over chunks of positions, in the memory of one
logits tensor.

A distillation loss on a large vocabulary is dominated by its full-size
intermediates: log-softmaxes, exponentials and their gradients, each as
large as the logits. `per_position` computes a per-position divergence
chunk by chunk (a fixed number of positions at a time, one chunk after
the other) and, in the same pass, the gradient of each position's value
with respect to that position's student logits, written in place into one
buffer of the logits' shape. The backward pass then scales that buffer by
the upstream gradient (one value per position) in place. The loss' extra
memory is the gradient, which cannot be avoided, plus one chunk's
working space.

Every chunk runs the unchunked functions on its rows and takes their
gradient by automatic differentiation, so values and gradients equal the
unchunked form's up to float32 rounding, for any divergence written per
position (forward KL, reverse KL, JSD(β), the top-k forms).

Inside a `tf.function` (in `fit`, `evaluate`) the loop is compiled with
XLA, which updates the buffer in place; called eagerly the same loop runs
uncompiled, with the same values but a copy of the buffer at each chunk.
Where no gradient is recorded (evaluation), only the values are computed.
"""

import tensorflow as tf
from keras import ops

AUTO = "auto"
# Under `"auto"`, logits over at least this many classes are chunked
# (language models' vocabularies; not classifiers').
AUTO_MIN_VOCAB = 16384
# A chunk holds about this many logits (float32: 8 MiB): 8 positions of
# a 262,144-token vocabulary, 64 of 32,768.
CHUNK_ELEMENTS = 2**21


def check_chunk_size(chunk_size):
    """Validates a loss' `chunk_size` argument; returns it.

    Raises:
        ValueError: If it is not `"auto"`, None or a positive int.
    """
    valid = chunk_size is None or chunk_size == AUTO
    if isinstance(chunk_size, int) and not isinstance(chunk_size, bool):
        valid = chunk_size > 0
    if not valid:
        raise ValueError(
            "Invalid value for argument `chunk_size`. Expected 'auto' (chunk "
            "large logits), None (never chunk) or a positive int (positions "
            f"per chunk). Received: chunk_size={chunk_size!r}"
        )
    return chunk_size


def rows_per_chunk(chunk_size, vocab):
    """Positions per chunk for logits over `vocab` classes, or None for
    the unchunked form.

    Args:
        chunk_size: `"auto"`, None or a positive int.
        vocab: The logits' last axis (an int, or None if unknown).

    Returns:
        A positive int, or None.
    """
    if chunk_size is None:
        return None
    if chunk_size != AUTO:
        return int(chunk_size)
    if vocab is None or vocab < AUTO_MIN_VOCAB:
        return None
    return max(1, CHUNK_ELEMENTS // vocab)


def per_position(function, teacher, student_logits, temperature, rows):
    """A per-position divergence computed `rows` positions at a time.

    Inside a `tf.function` (as in `fit`) the loop over chunks is compiled
    with XLA, which writes each chunk's rows into the gradient's buffer
    in place (TensorFlow's own kernels copy the buffer at every write);
    called eagerly, it runs the same loop uncompiled, with the same
    values but without the memory saving.

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
    with_gradient = _recording(student_logits)
    loop = _chunk_loop(function, teacher, rows, with_gradient)
    if not tf.executing_eagerly():
        loop = tf.function(loop, jit_compile=True, autograph=False)
    if not with_gradient:
        values, _ = loop(student, t, *parts)
        return tf.reshape(values, leading)

    @tf.custom_gradient
    def chunked(student):
        values, grads = loop(student, t, *parts)

        def gradient(upstream):
            return grads * tf.cast(upstream, grads.dtype)[:, None]

        return values, gradient

    return tf.reshape(chunked(student), leading)


def _chunk_loop(function, structure, rows, with_gradient):
    """The loop over chunks: `(student, t, *teacher_parts) -> (values,
    gradients)` (gradients a scalar zero when not `with_gradient`).

    Every chunk has `rows` positions, a static shape: the last one ends
    at the last position (overlapping the one before, whose rows it
    recomputes to the same values), and with fewer positions than
    `rows` the last position repeats.
    """

    def loop(student, t, *parts):
        count = tf.shape(student)[0]
        chunks = (count + rows - 1) // rows
        values = tf.zeros((count,), "float32")
        grads = tf.zeros_like(student) if with_gradient else tf.zeros(())

        def body(i, values, grads):
            start = tf.minimum(i * rows, tf.maximum(count - rows, 0))
            index = tf.minimum(start + tf.range(rows), count - 1)
            chunk = tf.gather(student, index)
            teacher = tf.nest.pack_sequence_as(
                structure, [tf.gather(p, index) for p in parts]
            )
            if with_gradient:
                with tf.GradientTape() as tape:
                    tape.watch(chunk)
                    value, target = function(teacher, chunk, t)
                grad = tf.cast(tape.gradient(target, chunk), grads.dtype)
                grads = tf.tensor_scatter_nd_update(grads, index[:, None], grad)
            else:
                value, _ = function(teacher, chunk, t)
            value = tf.cast(value, "float32")
            values = tf.tensor_scatter_nd_update(values, index[:, None], value)
            return i + 1, values, grads

        _, values, grads = tf.while_loop(
            lambda i, *_: i < chunks,
            body,
            (tf.constant(0), values, grads),
            parallel_iterations=1,
        )
        return values, grads

    return loop


def _recording(tensor):
    """Whether a gradient tape records operations on `tensor`."""
    try:
        from tensorflow.python.eager import record
    except ImportError:  # pragma: no cover - a TensorFlow without it
        return True
    return record.should_record_backprop([tensor])


def chunked_or_not(function, teacher, student_logits, temperature, rows):
    """`per_position` over chunks of `rows` positions, or `function` on
    all positions at once when `rows` is None (its `value` with the
    gradient of its `target`)."""
    if rows is not None:
        return per_position(
            function, teacher, student_logits, temperature, rows
        )
    value, target = function(
        teacher, student_logits, ops.cast(temperature, "float32")
    )
    if value is target:
        return value
    return target + ops.stop_gradient(value - target)
