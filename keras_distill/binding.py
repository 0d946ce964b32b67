"""How a `Distiller` holds its losses and the views they read.

A distiller binds each distillation loss to itself (the loss' temperature
and other scalars become the distiller's non-trainable variables, so a
callback can assign them), keeps one weight variable per loss, and, once
both models are built, builds the teacher's and the student's views for
the features the losses read and checks them against the losses.
"""

import keras

from keras_distill import _keras_internals as internals
from keras_distill import losses as losses_module
from keras_distill.validation import check_models_for_losses
from keras_distill.validation import check_weights
from keras_distill.views import make_views


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


def _set_untracked(model, **values):
    """Sets attributes Keras must not track (saved through the config)."""
    for attribute, value in values.items():
        object.__setattr__(model, attribute, value)


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


def bind_losses(model, distillation_losses, weights):
    """Resolves the losses and binds their variables to `model`.

    Replaces the losses bound before (their variables are untracked, so
    they are not saved), renames losses that share a name, and sets
    `model._distill_losses`, `_weight_variables` (one per loss),
    `_loss_variables` and `_needs_teacher`.

    Args:
        model: The `keras_distill.Distiller`.
        distillation_losses: The constructor's `distillation_losses`.
        weights: The constructor's `distillation_loss_weights`.
    """
    resolved, weights = check_distillation_losses(
        distillation_losses, weights, model.teacher
    )
    for variable in model.__dict__.get("_loss_variables", []):
        internals.untrack_variable(model, variable)
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
    _set_untracked(
        model,
        _distill_losses=resolved,
        _weight_variables=weight_variables,
        _loss_variables=weight_variables + bound,
        _needs_teacher=any(loss.needs_teacher for loss in resolved),
    )


def bind_views(model):
    """Builds both views of a distiller whose models are built, checks
    them against its losses, and builds the losses' own layers."""
    losses = model._distill_losses
    teacher_view, student_view = make_views(
        model.teacher,
        model.student,
        losses,
        (model.teacher_output, model.student_output),
        (model.teacher_output_type, model.student_output_type),
    )
    check_models_for_losses(
        losses,
        model.teacher,
        model.student,
        teacher_view,
        student_view,
        model.teacher_preprocessing,
    )
    _set_untracked(
        model, _teacher_view=teacher_view, _student_view=student_view
    )
    model._loss_layers.clear()
    for loss in losses:
        teacher = teacher_view if loss.needs_teacher else None
        loss.build(
            teacher.shapes(loss.teacher_layer) if teacher else None,
            student_view.shapes(loss.student_layer),
        )
        model._loss_layers.extend(loss.layers)
    if hasattr(model.student, "output_names"):
        model.output_names = model.student.output_names


def trainable_weights(model):
    """The student's trainable weights, then those of the losses' own
    layers (adapters), each once; never the teacher's."""
    weights = list(model.student.trainable_weights)
    seen = {id(w) for w in weights}
    for loss in model._distill_losses:
        for w in getattr(loss, "trainable_weights", []):
            if id(w) not in seen:
                weights.append(w)
                seen.add(id(w))
    return weights
