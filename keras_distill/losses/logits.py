"""Losses on the teacher's and the student's final logits."""

import keras
from keras import ops

from keras_distill._validation import check_choice
from keras_distill._validation import check_non_negative
from keras_distill._validation import check_positive
from keras_distill.losses.base import REDUCTIONS
from keras_distill.losses.base import DistillationLoss
from keras_distill.losses.base import is_kl_divergence
from keras_distill.losses.base import keras_loss_mean
from keras_distill.losses.base import resolve_keras_loss
from keras_distill.losses.base import variable_property
from keras_distill.losses.base import weighted_mean
from keras_distill.losses.chunks import AUTO
from keras_distill.losses.chunks import check_chunk_size
from keras_distill.losses.chunks import chunked_or_not
from keras_distill.losses.chunks import rows_per_chunk
from keras_distill.losses.divergences import TOP_K_FORMS
from keras_distill.losses.divergences import forward_kl
from keras_distill.losses.divergences import generalized_jsd
from keras_distill.losses.divergences import is_top_k
from keras_distill.losses.divergences import log_probs
from keras_distill.losses.divergences import reverse_kl
from keras_distill.losses.divergences import top_k_log_probs
from keras_distill.losses.registry import register


def soft_kl(
    teacher_logits,
    student_logits,
    temperature,
    sample_weight=None,
    reduction="sum_over_batch_size",
    chunk_size=None,
):
    """Temperature-scaled KL divergence from logits, times T².

    Formula:

    ```
    p_t = softmax(teacher_logits / T)
    loss = T² · Σ_c p_t (log_softmax(teacher_logits / T)
                         - log_softmax(student_logits / T))
    ```

    summed over the last (class) axis and averaged over every other axis
    (`keras_distill.losses.weighted_mean`: `Σ w · KL / positions` with
    sample weights), in float32 whatever the inputs' dtype.

    At high temperatures the two log-softmax terms nearly cancel, and the
    T² factor then multiplies their float32 rounding error (about 1e-4
    relative at T = 100). This function avoids that cancellation. With
    `d = (t - s) / T` and `e = d - Σ p_t d`, the divergence is exactly
    `KL = log Σ p_t exp(-e) = log1p(Σ p_t φ(e) - Σ p_t e)` where
    `φ(e) = exp(-e) - 1 + e` is taken from its Taylor series for small
    `|e|`; the first form is used where KL > 0.1 (no cancellation there,
    and it cannot overflow), the second below. Both stay near float32
    precision at any temperature and for saturated (one-hot) teachers.

    Only the value needs this care: the gradient of the textbook form,
    `T · (softmax(s/T) - softmax(t/T)) / batch`, has no cancellation. The
    gradient is therefore taken through the textbook form (its backward
    pass is a few ops) and the returned value is the cancellation-free
    one.

    Args:
        teacher_logits: Tensor `(batch, ..., classes)`.
        student_logits: Tensor of the same shape.
        temperature: Positive scalar (float or float32 variable).
        sample_weight: Optional weights of the positions `(batch, ...)`
            (padding and Keras masks folded in by the `Distiller`).
        reduction: How positions are averaged (`weighted_mean`).
        chunk_size: None (all positions at once), `"auto"` or positions
            per chunk (`keras_distill.losses.chunks`): the same value and
            gradient in the memory of about one logits tensor.

    Returns:
        A float32 scalar.
    """
    t = ops.cast(temperature, "float32")
    student_logits = ops.convert_to_tensor(student_logits)
    rows = rows_per_chunk(chunk_size, student_logits.shape[-1])
    values = chunked_or_not(_kl_pair, teacher_logits, student_logits, t, rows)
    return weighted_mean(values, sample_weight, reduction) * t * t


def _kl_pair(teacher_logits, student_logits, t):
    """Per position: the cancellation-free KL (the value) and the
    textbook form (whose gradient is taken)."""
    teacher = ops.cast(teacher_logits, "float32")
    student = ops.cast(student_logits, "float32")
    textbook = forward_kl(log_probs(teacher, t), log_probs(student, t))
    precise = _precise_kl(
        ops.stop_gradient(teacher), ops.stop_gradient(student), t
    )
    return precise, textbook


def _precise_kl(teacher, student, t):
    """KL(p_t || p_s) per position, without cancellation (no T²)."""
    log_p_t = ops.log_softmax(teacher / t, axis=-1)
    p_t = ops.exp(log_p_t)
    d = (teacher - student) / t
    e = d - ops.sum(p_t * d, axis=-1, keepdims=True)
    # log p_t(c) - e(c): its log-sum-exp is the KL divergence.
    x = log_p_t - e
    kl_large = ops.logsumexp(x, axis=-1)
    small = ops.abs(e) < 0.25
    es = ops.where(small, e, ops.zeros_like(e))
    series = (
        es
        * es
        * (
            1 / 2
            + es * (-1 / 6 + es * (1 / 24 + es * (-1 / 120 + es * (1 / 720))))
        )
    )
    # p_t · φ(e), computed as exp(log p_t - e) - p_t + p_t · e off the series.
    direct = ops.exp(ops.minimum(x, 60.0)) - p_t + p_t * e
    p_phi = ops.where(small, p_t * series, direct)
    kl_small = ops.log1p(
        ops.maximum(ops.sum(p_phi, axis=-1) - ops.sum(p_t * e, axis=-1), 0.0)
    )
    return ops.where(kl_large > 0.1, kl_large, kl_small)


def soft_targets(
    loss_fn,
    teacher_logits,
    student_logits,
    temperature,
    weight,
    reduction="sum_over_batch_size",
):
    """`loss_fn(softmax(t/T), softmax(s/T)) · T²`, per position, weighted."""
    t = ops.cast(temperature, "float32")
    p_t = ops.softmax(ops.cast(teacher_logits, "float32") / t, axis=-1)
    p_s = ops.softmax(ops.cast(student_logits, "float32") / t, axis=-1)
    return keras_loss_mean(loss_fn, p_t, p_s, weight, reduction) * t * t


@register("kd", "logits", "hinton", "logits_distillation")
class LogitsDistillation(DistillationLoss):
    """Hinton's knowledge distillation loss on logits.

    The KL divergence from the teacher's softened distribution to the
    student's, multiplied by T² so that its gradients keep the same size as
    the supervised loss' when T changes (Hinton et al., 2015).

    Formula:

    ```
    loss = T² · mean_batch Σ_c softmax(t/T)_c
                (log_softmax(t/T)_c - log_softmax(s/T)_c)
    ```

    with `t` the teacher's logits and `s` the student's. Both models must
    output logits (no softmax) with the same number of classes. Unlike
    `keras.distillation.LogitsDistillation` with its default string loss,
    the softmax and the T² factor are always applied.

    The temperature is a variable once the loss is attached to a
    `keras_distill.Distiller`: set `loss.temperature = 8.0` (or
    `distiller.temperature = 8.0`) from a callback and the next step uses it,
    without recompiling.

    Args:
        temperature: Positive float, the softmax temperature T. Defaults to
            4.0.
        name: Optional name, used for the loss' variables.
        loss: `keras.distillation.LogitsDistillation`'s argument, accepted
            so that code written for it runs unchanged. None (the
            canonical form) or a KL divergence (`"kl_divergence"`, Keras'
            default) give the formula above; another Keras loss is applied
            to the softened distributions as `SoftTargetDistillation`
            does, `loss(softmax(t/T), softmax(s/T)) · T²`. For several
            outputs, choose one with `Distiller(teacher_output=...,
            student_output=...)` instead of a list of losses.
        reduction: `"sum_over_batch_size"` (the default, Keras' own) or
            `"mean_with_sample_weight"` (the mean over weighted positions).
        top_k_form: `"rest"` or `"renormalized"`, for top-k teachers.
        chunk_size: `"auto"` (the default: chunked for 16,384 classes or
            more), None (never) or positions per chunk. Chunked, the
            loss and its gradient are computed a chunk of positions at a
            time, with the same values and gradients, in the memory of
            about one logits tensor (`keras_distill.losses.chunks`). Not
            used with a Keras `loss`.

    Raises:
        ValueError: If `temperature` is not a positive number or `loss` is
            a structure or not a Keras loss.

    Example:

    ```python
    loss = keras_distill.losses.LogitsDistillation(temperature=4.0)
    value = loss(teacher_logits, student_logits)
    ```
    """

    variables = ("temperature",)
    needs_logits = True
    temperature = variable_property("temperature", check_positive)

    @property
    def reads_top_k_teacher(self):
        return self._loss_fn is None  # the KL form, not a Keras loss

    def __init__(
        self,
        temperature=4.0,
        name=None,
        *,
        loss=None,
        reduction="sum_over_batch_size",
        top_k_form="rest",
        chunk_size=AUTO,
    ):
        super().__init__(name=name)
        self.temperature = temperature
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        self.top_k_form = check_choice("top_k_form", top_k_form, TOP_K_FORMS)
        self.chunk_size = check_chunk_size(chunk_size)
        if isinstance(loss, (list, tuple, dict)):
            raise ValueError(
                "Invalid value for argument `loss`. Expected one loss: "
                "keras_distill compares one output per loss; choose it with "
                "`Distiller(teacher_output=..., student_output=...)`. "
                f"Received: loss={loss!r}"
            )
        self.loss = loss
        self._loss_fn = (
            None
            if loss is None or is_kl_divergence(loss)
            else resolve_keras_loss(loss)
        )

    def compute(
        self, teacher_outputs, student_outputs, y_true=None, sample_weight=None
    ):
        t = self.variable("temperature")
        if is_top_k(teacher_outputs):
            if self._loss_fn is not None:
                raise ValueError(
                    f"`{type(self).__name__}` with a Keras loss needs the "
                    "teacher's full distribution. Expected a cache built "
                    "without `top_k`. Received: top-k teacher outputs"
                )
            return divergence_mean(
                forward_kl,
                teacher_outputs,
                student_outputs,
                t,
                sample_weight,
                self.reduction,
                self.top_k_form,
                self.chunk_size,
            )
        if self._loss_fn is not None:
            return soft_targets(
                self._loss_fn,
                teacher_outputs,
                student_outputs,
                t,
                sample_weight,
                self.reduction,
            )
        return soft_kl(
            teacher_outputs,
            student_outputs,
            t,
            sample_weight,
            self.reduction,
            self.chunk_size,
        )

    def get_config(self):
        config = super().get_config()
        if not isinstance(self.loss, (str, type(None))):
            config["loss"] = keras.losses.serialize(self.loss)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("loss"), dict):
            config["loss"] = keras.losses.deserialize(config["loss"])
        return cls(**config)


class _TokenDivergence(DistillationLoss):
    """A divergence between softened distributions, times T², per position
    (the shared body of `ReverseKL` and `GeneralizedJSD`)."""

    variables = ("temperature",)
    needs_logits = True
    reads_top_k_teacher = True
    temperature = variable_property("temperature", check_positive)

    def __init__(
        self,
        temperature=1.0,
        name=None,
        *,
        reduction="sum_over_batch_size",
        top_k_form="rest",
        chunk_size=AUTO,
    ):
        super().__init__(name=name)
        self.temperature = temperature
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        self.top_k_form = check_choice("top_k_form", top_k_form, TOP_K_FORMS)
        self.chunk_size = check_chunk_size(chunk_size)

    def divergence(self, log_p, log_q):
        raise NotImplementedError

    def compute(
        self, teacher_outputs, student_outputs, y_true=None, sample_weight=None
    ):
        return divergence_mean(
            self.divergence,
            teacher_outputs,
            student_outputs,
            self.variable("temperature"),
            sample_weight,
            self.reduction,
            self.top_k_form,
            self.chunk_size,
        )


@register("reverse_kl", "reverse_kd", "mode_seeking")
class ReverseKL(_TokenDivergence):
    """The reverse KL divergence, `KL(student || teacher)`, times T².

    Mode seeking: the student is pushed to put its mass where the teacher
    has some, rather than to cover all of the teacher's mass (the forward
    KL of `LogitsDistillation`). For language models (MiniLLM, GKD) it
    keeps a small student from spreading probability over tokens the
    teacher finds unlikely.

    Formula:

    ```
    loss = T² · mean_positions Σ_v q_v (log q_v - log p_v)
    p = softmax(teacher / T),  q = softmax(student / T)
    ```

    computed from `log_softmax` in float32 (stable for vocabularies of
    65k tokens in bfloat16); positions are averaged with the sample
    weights and masks as `keras_distill.losses.weighted_mean` does (with
    `reduction="mean_with_sample_weight"`, per valid token). A teacher
    from a top-k `TeacherCache` is compared over its top k tokens (see
    `keras_distill.losses.divergences`).

    Args:
        temperature: Positive float T. Defaults to 1.0.
        name: Optional name, used for the loss' variables.
        reduction: `"sum_over_batch_size"` (the default, Keras' own) or
            `"mean_with_sample_weight"` (the mean over weighted positions).
        top_k_form: `"rest"` or `"renormalized"`, for top-k teachers.
        chunk_size: `"auto"` (the default: chunked for 16,384 classes or
            more), None (never) or positions per chunk. Chunked, the
            loss and its gradient are computed a chunk of positions at a
            time, with the same values and gradients, in the memory of
            about one logits tensor (`keras_distill.losses.chunks`).

    Raises:
        ValueError: If an argument is invalid.

    Example:

    ```python
    loss = keras_distill.losses.ReverseKL()
    value = loss(teacher_logits, student_logits)
    ```
    """

    def divergence(self, log_p, log_q):
        return reverse_kl(log_p, log_q)


@register("jsd", "generalized_jsd", "gkd")
class GeneralizedJSD(_TokenDivergence):
    """GKD's generalized Jensen-Shannon divergence, times T².

    Formula (Agarwal et al., "On-policy distillation of language models",
    ICLR 2024):

    ```
    m = β p + (1 - β) q
    loss = T² · mean_positions [β KL(p || m) + (1 - β) KL(q || m)]
    ```

    with `p` the teacher's and `q` the student's softened distributions.
    `beta=0` is the forward KL (`LogitsDistillation`), `beta=1` the
    reverse KL (`ReverseKL`), the limits GKD takes; in between it is
    bounded (by `log 2` at β = 0.5) and interpolates between covering the
    teacher's modes and seeking them. Computed from log-softmax with a
    log-sum-exp for `log m`, in float32.

    Args:
        beta: The mixture weight β in [0, 1]. Defaults to 0.5.
        temperature: Positive float T. Defaults to 1.0.
        name: Optional name, used for the loss' variables.
        reduction: `"sum_over_batch_size"` (the default) or
            `"mean_with_sample_weight"`.
        top_k_form: `"rest"` or `"renormalized"`, for top-k teachers.
        chunk_size: `"auto"` (the default: chunked for 16,384 classes or
            more), None (never) or positions per chunk. Chunked, the
            loss and its gradient are computed a chunk of positions at a
            time, with the same values and gradients, in the memory of
            about one logits tensor (`keras_distill.losses.chunks`).

    Raises:
        ValueError: If `beta` is not in [0, 1] or another argument is
            invalid.

    Example:

    ```python
    loss = keras_distill.losses.GeneralizedJSD(beta=0.5)
    value = loss(teacher_logits, student_logits)
    ```
    """

    def __init__(
        self,
        beta=0.5,
        temperature=1.0,
        name=None,
        *,
        reduction="sum_over_batch_size",
        top_k_form="rest",
        chunk_size=AUTO,
    ):
        super().__init__(
            temperature,
            name,
            reduction=reduction,
            top_k_form=top_k_form,
            chunk_size=chunk_size,
        )
        beta = check_non_negative("beta", beta)
        if beta > 1:
            raise ValueError(
                "Invalid value for argument `beta`. Expected a float in "
                f"[0, 1]. Received: beta={beta!r}"
            )
        self.beta = beta

    def divergence(self, log_p, log_q):
        return generalized_jsd(log_p, log_q, self.beta)


@register("soft_target", "soft_target_distillation")
class SoftTargetDistillation(LogitsDistillation):
    """Any Keras loss applied to the softened distributions, times T².

    This is the keras.io Distiller example's form:
    `loss_fn(softmax(t/T), softmax(s/T)) · T²`. With
    `loss=keras.losses.KLDivergence()` it equals `LogitsDistillation`, which
    is preferred (it works from log-softmax and is exact for confident
    teachers); use this class for other probability losses, for example
    `keras.losses.CategoricalCrossentropy()`.

    Args:
        loss: A Keras loss (name, instance or function) called as
            `loss(teacher_probabilities, student_probabilities)`. Defaults to
            `"kl_divergence"`.
        temperature: Positive float, the softmax temperature T. Defaults to
            4.0.
        name: Optional name, used for the loss' variables.

    Raises:
        ValueError: If `temperature` is not a positive number or `loss` is
            not a known Keras loss.

    Example:

    ```python
    loss = keras_distill.losses.SoftTargetDistillation(
        loss="categorical_crossentropy", temperature=2.0
    )
    ```
    """

    def __init__(
        self,
        loss="kl_divergence",
        temperature=4.0,
        name=None,
        *,
        reduction="sum_over_batch_size",
    ):
        DistillationLoss.__init__(self, name=name)
        self.temperature = temperature
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        self.top_k_form = "rest"
        self.chunk_size = None
        self.loss = loss
        # Always the given loss on probabilities, KL included (the
        # example's form); `compute` and the config are LogitsDistillation's.
        self._loss_fn = resolve_keras_loss(loss)


def divergence_mean(
    divergence,
    teacher,
    student_logits,
    temperature,
    weight,
    reduction,
    form,
    chunk_size=None,
):
    """`T² · weighted_mean(divergence(log p, log q))`, the teacher given as
    logits or as top-k logits (`keras_distill.losses.divergences`), over
    chunks of positions if `chunk_size` says so
    (`keras_distill.losses.chunks`)."""
    t = ops.cast(temperature, "float32")

    def pair(teacher, student, t):
        if is_top_k(teacher):
            log_p, log_q = top_k_log_probs(teacher, student, t, form)
        else:
            log_p, log_q = log_probs(teacher, t), log_probs(student, t)
        value = divergence(log_p, log_q)
        return value, value

    student_logits = ops.convert_to_tensor(student_logits)
    rows = rows_per_chunk(chunk_size, student_logits.shape[-1])
    values = chunked_or_not(pair, teacher, student_logits, t, rows)
    return weighted_mean(values, weight, reduction) * t * t
