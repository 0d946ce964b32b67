"""The keras.io Distiller example's `compile` keywords, translated.

The keras.io "Knowledge Distillation" example compiles its `Distiller`
with `student_loss_fn`, `distillation_loss_fn`, `alpha` and
`temperature`. `keras_distill.Distiller.compile` accepts them, with the
same meaning, so code written for the example runs unchanged; this
module maps them onto the distiller's own arguments in one place.
"""

import dataclasses

from keras_distill.losses.base import is_kl_divergence
from keras_distill.losses.logits import LogitsDistillation
from keras_distill.losses.logits import SoftTargetDistillation


@dataclasses.dataclass
class Translated:
    """What the keras.io keywords mean for a `Distiller`.

    Attributes:
        loss: The student's supervised loss (`loss` or `student_loss_fn`).
        student_loss_weight: `alpha`, or None to keep the current one.
        temperature: The temperature to set, or None.
        distillation_losses: The losses that replace the distiller's, or
            None to keep them.
    """

    loss: object
    student_loss_weight: object = None
    temperature: object = None
    distillation_losses: object = None


def translate(losses, loss, kwargs):
    """Maps the keras.io keywords onto a distiller's arguments.

    `distillation_loss_fn` is a Keras loss applied to the softened
    distributions. A KL divergence (the example's choice) is what
    `LogitsDistillation` computes, so the current single
    `LogitsDistillation` is kept; another loss becomes
    `SoftTargetDistillation(distillation_loss_fn)`. `alpha` is
    `student_loss_weight`, `student_loss_fn` is `loss`, and `temperature`
    sets every loss' temperature.

    Args:
        losses: The distiller's current `DistillationLoss` list.
        loss: `compile`'s `loss`.
        kwargs: `compile`'s other keyword arguments: the keras.io ones
            (`student_loss_fn`, `distillation_loss_fn`, `alpha`,
            `temperature`) are taken out of it.

    Returns:
        A `Translated`.

    Raises:
        ValueError: If both `loss` and `student_loss_fn` are given.
    """
    student_loss_fn = kwargs.pop("student_loss_fn", None)
    distillation_loss_fn = kwargs.pop("distillation_loss_fn", None)
    alpha = kwargs.pop("alpha", None)
    temperature = kwargs.pop("temperature", None)
    if student_loss_fn is not None:
        if loss is not None:
            raise ValueError(
                "Invalid arguments to `compile()`. Expected `loss` or "
                "`student_loss_fn`, not both. Received: "
                f"loss={loss!r}, student_loss_fn={student_loss_fn!r}"
            )
        loss = student_loss_fn
    replaced = None
    if distillation_loss_fn is not None:
        replaced = _replacement(losses, distillation_loss_fn, temperature)
    return Translated(loss, alpha, temperature, replaced)


def _replacement(losses, loss_fn, temperature):
    """The loss list for `distillation_loss_fn`, or None to keep it."""
    keeps_logits = len(losses) == 1 and type(losses[0]) is LogitsDistillation
    if is_kl_divergence(loss_fn):
        if keeps_logits:
            return None
        return [LogitsDistillation(temperature=temperature or 4.0)]
    kept = losses[0].temperature if keeps_logits else 4.0
    return [
        SoftTargetDistillation(loss=loss_fn, temperature=temperature or kept)
    ]
