"""The terms of a `Distiller`'s training objective, in float32.

`keras_distill.Distiller.train_step` runs the teacher and the student and
adds these up as `alpha · supervised + (1 - alpha) · distillation +
regularization`; each is a plain function of tensors here, so the step
reads top to bottom and each term can be tested alone.
"""

import keras
import tensorflow as tf
from keras import ops

from keras_distill._keras_internals import keras_mask
from keras_distill._views import MASK
from keras_distill._views import select
from keras_distill.distribute import replica_count
from keras_distill.distribute import replica_share
from keras_distill.losses.base import accepts_sample_weight
from keras_distill.losses.base import merge_mask


def supervised_loss(compiled, y, y_pred, sample_weight, mix=(None, None)):
    """The compiled supervised loss on the student's predictions.

    Args:
        compiled: The `CompileLoss` of `compile(loss=...)`, or None.
        y: The labels, or None.
        y_pred: The student's predictions.
        sample_weight: Sample weights, or None.
        mix: `(permutation, coefficient)` of a mixup, or `(None, None)`:
            the loss on the mixed labels `λ·L(y) + (1 - λ)·L(y[perm])`.

    Returns:
        A float32 scalar (0 without labels or a loss).
    """
    if y is None or compiled is None:
        return ops.zeros((), dtype="float32")
    value = compiled(y, y_pred, sample_weight)
    if value is None:
        return ops.zeros((), dtype="float32")
    value = ops.cast(value, "float32")
    perm, lam = mix
    if perm is None:
        return value
    y_mixed = keras.tree.map_structure(lambda t: ops.take(t, perm, axis=0), y)
    mixed = ops.cast(compiled(y_mixed, y_pred, sample_weight), "float32")
    return lam * value + (1.0 - lam) * mixed


def regularization_loss(student, losses):
    """The student's and the losses' own layers' regularization losses,
    scaled for the number of replicas."""
    extra = [ops.sum(ops.cast(x, "float32")) for x in student.losses]
    for loss in losses:
        extra += [ops.cast(x, "float32") for x in getattr(loss, "losses", [])]
    if not extra:
        return ops.zeros((), dtype="float32")
    return replica_share(ops.sum(ops.stack(extra)))


def distillation_loss(losses, weights, teacher_outputs, student_outputs, y, w):
    """`Σ_i w_i · distillation_i`, each loss on the outputs it reads.

    Args:
        losses: The `DistillationLoss` list.
        weights: One scalar weight (variable) per loss.
        teacher_outputs: The teacher view's outputs, or None.
        student_outputs: The student view's outputs.
        y: The labels, or None.
        w: Sample weights, or None. Merged with the Keras mask of the
            student output a loss reads, and passed to losses whose
            `compute` takes `sample_weight`.

    Returns:
        A float32 scalar.

    Raises:
        ValueError: If a loss needs labels and there are none, or returns
            something other than a scalar.
    """
    total = ops.zeros((), dtype="float32")
    for loss, weight in zip(losses, weights):
        name = type(loss).__name__
        if loss.needs_labels and y is None:
            raise ValueError(
                f"`{name}` needs labels. Expected data as (x, y). "
                "Received: x only"
            )
        student = select(student_outputs, loss.student_layer)
        kwargs = {}
        if accepts_sample_weight(loss):  # the compared output's positions
            mask = keras_mask(student)
            if loss.student_layer is None:
                mask = student_outputs[MASK]
            kwargs["sample_weight"] = merge_mask(w, mask)
        teacher = None
        if loss.needs_teacher:
            teacher = select(teacher_outputs, loss.teacher_layer)
        value = loss.compute(teacher, student, y_true=y, **kwargs)
        if len(value.shape) != 0:
            raise ValueError(
                f"`{name}.compute` must return a scalar. Received: a tensor "
                f"of shape {tuple(value.shape)}"
            )
        total = total + weight * ops.cast(value, "float32")
    return total


def update_trackers(trackers, x, terms):
    """Updates the `loss`, `student_loss` and `distillation_loss` means.

    The total and the supervised term were divided by the number of
    replicas (as Keras scales a loss for its gradients); the trackers
    record the per-replica values times the replicas, as Keras does, so
    the logs show the loss of the global batch.

    Args:
        trackers: `(loss, student_loss, distillation_loss)` `Mean`s.
        x: The batch's inputs (for its size).
        terms: `(supervised, distillation or None, total)`.
    """
    supervised, distillation, total = terms
    batch = tf.shape(keras.tree.flatten(x)[0])[0]
    replicas = replica_count()
    trackers[0].update_state(total * replicas, sample_weight=batch)
    trackers[1].update_state(supervised * replicas, sample_weight=batch)
    if distillation is not None:
        trackers[2].update_state(distillation, sample_weight=batch)
