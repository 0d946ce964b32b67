"""The NaN guard of a training step (`compile(nan_policy="raise")`).

A step whose loss or gradients are not finite changes no weight and no
optimizer state (`apply_if_finite`), an in-graph check names the term
that went bad, and `NonFiniteLossGuard` turns it into a
`NonFiniteLossError` that says which epoch and batch.
"""

import math

import keras
import tensorflow as tf

NAN_TAG = "keras_distill: non-finite "


class NonFiniteLossError(FloatingPointError):
    """Raised by `Distiller.fit` when the training loss becomes NaN or
    infinite (under `compile(nan_policy="raise")`, the default).

    Public as `keras_distill.NonFiniteLossError`. The message names the
    epoch, the batch and the term; the student keeps the weights of the
    last finite step.

    Example:

    ```python
    try:
        distiller.fit(dataset, epochs=5)
    except keras_distill.NonFiniteLossError as error:
        print(error)  # ... at epoch 2, batch 7: distillation_loss ...
    ```
    """


def non_finite_message(term, epoch, batch=None):
    """The message of `NonFiniteLossError` for a loss term, an epoch and
    (when known) a batch, both counted from 1 as Keras' progress bar."""
    where = f"epoch {epoch + 1}"
    if batch is not None:
        where += f", batch {batch + 1}"
    what = (
        "a gradient of the loss is NaN or infinite"
        if term == "gradients"
        else f"{term} is NaN or infinite"
    )
    return (
        f"The training loss is not finite at {where}: {what}; the "
        "weights are those after the last finite step. Expected finite "
        "inputs, labels and teacher "
        "outputs and a stable learning rate. Check the data for NaN or "
        "inf, the teacher's outputs, and lower the learning rate; "
        "compile(nan_policy='ignore') trains on regardless."
    )


def check_finite(value, term):
    """`value`, with an in-graph check that it is finite.

    The check is one op on a scalar. XLA compiles it away, so under
    `jit_compile` the `NonFiniteLossGuard` catches a non-finite loss at the
    end of the epoch instead.

    Args:
        value: A scalar loss tensor.
        term: Its name, for the error message.

    Returns:
        `value`, unchanged.
    """
    return tf.debugging.check_numerics(value, f"{NAN_TAG}{term}")


def _finite_step(loss, gradients, optimizer):
    """Whether a step may be applied: its loss is finite and, unless a
    `LossScaleOptimizer` handles them itself, so are its gradients (a NaN
    input can leave the loss finite and the gradients not)."""
    total = tf.cast(loss, "float32")
    if not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        # One reduction a gradient (no boolean copy): a NaN or an infinity
        # anywhere makes the sum NaN or infinite.
        sums = [
            tf.reduce_sum(tf.cast(g, "float32"))
            for g in gradients
            if g is not None
        ]
        if sums:
            total = total + tf.add_n(sums) * 0.0
    return tf.math.is_finite(total)


def snapshot(variables):
    """`(variable, value)` pairs of `variables` as they are now (read in
    program order, before the step's forward pass updates them)."""
    return [(v, tf.identity(v.value)) for v in variables]


def _applied(function, *args):
    """A `tf.cond` branch: calls `function`, returns a constant."""

    def branch():
        function(*args)
        return tf.constant(True)

    return branch


def _cond_update(optimizer, gradients, variables, finite, saved):
    """Applies the gradients where `finite` holds on every replica, else
    puts the `saved` values back; returns a boolean tensor."""
    values = [value for _, value in saved]

    def apply(gradients):
        optimizer.apply_gradients(zip(gradients, variables))

    def restore(values):
        for (variable, _), value in zip(saved, values):
            variable.assign(value)

    if not tf.distribute.has_strategy():
        return tf.cond(
            finite, _applied(apply, gradients), _applied(restore, values)
        )

    def cross_replica(distribution, finite, gradients, values):
        flags = distribution.experimental_local_results(finite)
        every = tf.reduce_all(tf.stack(flags))
        each = distribution.extended.call_for_each_replica
        return tf.cond(
            every,
            _applied(lambda g: each(apply, args=(g,)), gradients),
            _applied(lambda v: each(restore, args=(v,)), values),
        )

    # A cond whose branch calls `merge_call` (as apply_gradients does)
    # must be taken in a cross-replica context.
    return tf.distribute.get_replica_context().merge_call(
        cross_replica, args=(finite, gradients, values)
    )


def apply_if_finite(optimizer, gradients_and_variables, terms, saved, check):
    """Applies a step's gradients only where its loss is finite.

    Where the loss, or a gradient, is not finite (on any replica), no
    weight and no optimizer state changes: the update is skipped and the
    non-trainable values in `saved` (BatchNormalization statistics the
    forward pass moved) are put back, so training stopped by
    `NonFiniteLossError` keeps the model of the last finite step. Under a
    `tf.distribute` strategy the decision is taken once for all replicas,
    in a cross-replica `cond`, as Keras' `LossScaleOptimizer` takes its
    own. Then, with `check`, an in-graph check names the first term that
    is not finite (`"student_loss"`, `"distillation_loss"`, or
    `"gradients"`).

    Args:
        optimizer: The compiled optimizer.
        gradients_and_variables: `(gradient, variable)` pairs.
        terms: `(total, supervised, distillation)` loss tensors.
        saved: `snapshot(...)` of the non-trainable variables the step
            may change, taken before its forward pass.
        check: Whether to add the in-graph checks (XLA drops them).

    Returns:
        `(supervised, distillation)`, after the checks.
    """
    gradients, variables = zip(*gradients_and_variables)
    total, supervised, distillation = terms
    finite = _finite_step(total, gradients, optimizer)
    done = _cond_update(optimizer, list(gradients), variables, finite, saved)
    if not check:
        return supervised, distillation
    with tf.control_dependencies([done]):
        supervised = check_finite(supervised, "student_loss")
        distillation = check_finite(distillation, "distillation_loss")
        with tf.control_dependencies([supervised, distillation]):
            gradient_check = tf.debugging.check_numerics(
                tf.where(finite, 0.0, float("nan")), f"{NAN_TAG}gradients"
            )
    with tf.control_dependencies([gradient_check]):
        return tf.identity(supervised), tf.identity(distillation)


def term_from_error(error):
    """The loss term named in a `check_finite` failure, or None."""
    message = str(getattr(error, "message", error))
    if NAN_TAG not in message:
        return None
    return message.split(NAN_TAG, 1)[1].split()[0].rstrip(":")


class NonFiniteLossGuard(keras.callbacks.Callback):
    """Stops `fit` with a clear error once the loss is not finite.

    Added by `Distiller.fit` when the distiller was compiled with
    `nan_policy="raise"` (the default). The training step checks its loss
    terms in the graph and stops at the first non-finite one; this callback
    keeps the epoch count for the message and, where the step is compiled
    with XLA (which drops that check), checks the epoch's loss when the
    epoch ends. Either way `fit` raises `NonFiniteLossError`, so training
    never goes on silently with NaN weights; a step whose loss is not
    finite changes no weight (`apply_if_finite`). Its batch hook only
    keeps the batch's index for the message (with `steps_per_execution`,
    the first batch of the group).
    """

    def __init__(self):
        super().__init__()
        self.epoch = 0
        self.batch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.batch = None

    def on_train_batch_begin(self, batch, logs=None):
        self.batch = batch

    def on_epoch_end(self, epoch, logs=None):
        if not logs or "loss" not in logs:
            return
        if math.isfinite(float(keras.ops.convert_to_numpy(logs["loss"]))):
            return
        self.model.stop_training = True
        bad = [
            k
            for k in ("distillation_loss", "student_loss", "loss")
            if k in logs
            and not math.isfinite(float(keras.ops.convert_to_numpy(logs[k])))
        ]
        raise NonFiniteLossError(non_finite_message(bad[0], epoch))
