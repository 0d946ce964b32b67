"""What a `Distiller` holds, made by functions that return it.

The losses bound to the distiller (the loss' temperature and other scalars
become the distiller's non-trainable variables, so a callback can assign
them, and one weight variable per loss), unbuilt models built on a first
batch, and, once both models are built, the teacher's and the student's
views for the features the losses read, checked against the losses. The
`Distiller` assigns what these return; nothing here sets its attributes.
"""

import typing

import keras

from keras_distill import losses as losses_module
from keras_distill._checks import first_inputs
from keras_distill._validation import check_models_for_losses
from keras_distill._validation import check_weights
from keras_distill._views import make_views


def scalar_weight(model, value, name):
    """A float32 non-trainable scalar weight of `model`, never autocast."""
    return model.add_weight(
        shape=(),
        initializer=keras.initializers.Constant(value),
        dtype="float32",
        trainable=False,
        autocast=False,
        name=name,
    )


def check_distillation_losses(losses, weights, teacher):
    """Resolves the distillation losses and checks their weights.

    Args:
        losses: None (KD at T = 4), a loss, a registered name, a
            `keras.distillation` loss, or a list of these.
        weights: None (1.0 each) or one non-negative float per loss.
        teacher: The teacher, or None.

    Returns:
        `(list of DistillationLoss, list of float weights)`.
    """
    if losses is None:
        losses = [losses_module.LogitsDistillation()]
    if not isinstance(losses, (list, tuple)):
        losses = [losses]
    if not losses:
        raise ValueError(
            "Invalid value for argument `distillation_losses`. Expected at "
            "least one distillation loss. Received: distillation_losses=[]"
        )
    resolved = [losses_module.get(loss) for loss in losses]
    weights = check_weights(
        [1.0] * len(resolved) if weights is None else weights, len(resolved)
    )
    needing = [type(x).__name__ for x in resolved if x.needs_teacher]
    if teacher is None and needing:
        raise ValueError(
            "Invalid value for argument `teacher`. Expected a "
            f"`keras.Model`: the losses {needing} need a teacher. "
            "Received: teacher=None"
        )
    return resolved, weights


class BoundLosses(typing.NamedTuple):
    """The losses a distiller holds, as `bind_losses` returns them.

    Attributes:
        losses: The resolved `DistillationLoss` list (names made unique).
        weight_variables: One float32 scalar variable per loss.
        loss_variables: Those and every variable the losses bound.
        needs_teacher: Whether a loss reads the teacher.
    """

    losses: list
    weight_variables: list
    loss_variables: list
    needs_teacher: bool


def bind_losses(model, distillation_losses, weights):
    """Resolves the losses and binds their variables to `model`.

    The losses' temperatures and other scalars, and one weight per loss,
    become `model`'s non-trainable variables (a callback can assign them);
    losses that share a name are renamed. The caller holds what is
    returned, and untracks the variables of the losses it replaces.

    Args:
        model: The `keras_distill.Distiller` (its `add_weight` makes the
            variables).
        distillation_losses: The constructor's `distillation_losses`.
        weights: The constructor's `distillation_loss_weights`.

    Returns:
        A `BoundLosses`.
    """
    resolved, weights = check_distillation_losses(
        distillation_losses, weights, model.teacher
    )
    names = set()
    for i, loss in enumerate(resolved):
        if loss.name in names:
            loss.name = f"{loss.name}_{i}"
        names.add(loss.name)
        loss.bind(model)
    weight_variables = [
        scalar_weight(model, weight, f"{loss.name}_weight")
        for loss, weight in zip(resolved, weights)
    ]
    bound = [v for loss in resolved for v in loss._bound.values()]
    return BoundLosses(
        resolved,
        weight_variables,
        weight_variables + bound,
        any(loss.needs_teacher for loss in resolved),
    )


def build_models(teacher, student, x, preprocessing=None):
    """Builds an unbuilt teacher or student on the first batch of `x`.

    Args:
        teacher: The teacher, or None.
        student: The student.
        x: `fit`'s data (arrays, a dataset or a `PyDataset`).
        preprocessing: The teacher's preprocessing, or None.

    Raises:
        ValueError: If `x` has no batch, or is of a kind whose first batch
            cannot be taken without consuming it (a Python generator).
    """
    unbuilt = [m.name for m in (teacher, student) if m and not m.built]
    sample = first_inputs(x)
    if sample is None:
        raise ValueError(
            "Invalid data. Expected at least one batch to build the "
            f"unbuilt model(s) {unbuilt} on. Received: no batch"
        )
    if not all(hasattr(a, "shape") for a in keras.tree.flatten(sample)):
        raise ValueError(
            f"Invalid data to build the unbuilt model(s) {unbuilt} on. "
            "Expected arrays, a `tf.data.Dataset` or a "
            "`keras.utils.PyDataset`, or models built first (call them on "
            f"a batch). Received: x of type {type(sample).__name__}"
        )
    if not student.built:
        student(sample, training=False)
    if teacher is not None and not teacher.built:
        if preprocessing is not None:
            sample = preprocessing(sample)
        teacher(sample, training=False)


def bind_views(
    teacher, student, losses, outputs, output_types, preprocessing=None
):
    """Both views of built models, checked against the losses, and the
    losses' own layers built on them.

    Args:
        teacher: The teacher, or None.
        student: The student.
        losses: The `DistillationLoss` list.
        outputs: `(teacher_output, student_output)`.
        output_types: `(teacher_output_type, student_output_type)`.
        preprocessing: The teacher's preprocessing, or None.

    Returns:
        `(teacher view or None, student view, the losses' layers)`.
    """
    teacher_view, student_view = make_views(
        teacher, student, losses, outputs, output_types
    )
    check_models_for_losses(
        losses, teacher, student, teacher_view, student_view, preprocessing
    )
    layers = []
    for loss in losses:
        view = teacher_view if loss.needs_teacher else None
        loss.build(
            view.shapes(loss.teacher_layer) if view else None,
            student_view.shapes(loss.student_layer),
        )
        layers.extend(loss.layers)
    return teacher_view, student_view, layers


def trainable_weights(student, losses):
    """The student's trainable weights, then those of the losses' own
    layers (adapters), each once; never the teacher's."""
    weights = list(student.trainable_weights)
    seen = {id(w) for w in weights}
    for loss in losses:
        for w in getattr(loss, "trainable_weights", []):
            if id(w) not in seen:
                weights.append(w)
                seen.add(id(w))
    return weights


def _with_temperature(losses):
    return [x for x in losses if "temperature" in x.variables]


def temperature(losses):
    """The temperature of the first loss that has one, or None."""
    found = _with_temperature(losses)
    return found[0].temperature if found else None


def set_temperature(losses, value):
    """Sets the temperature of every loss that has one.

    Raises:
        ValueError: If none has one.
    """
    found = _with_temperature(losses)
    if not found:
        raise ValueError(
            "Cannot set `temperature`: none of the distillation losses "
            f"{[type(x).__name__ for x in losses]} has one."
        )
    for loss in found:
        loss.temperature = value
