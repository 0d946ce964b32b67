"""Losses on the teacher's and the student's final logits."""

import keras
from keras import ops

from keras_distill.losses.base import REDUCTIONS
from keras_distill.losses.base import DistillationLoss
from keras_distill.losses.base import as_float
from keras_distill.losses.base import is_kl_divergence
from keras_distill.losses.base import keras_loss_mean
from keras_distill.losses.base import resolve_keras_loss
from keras_distill.losses.base import variable_property
from keras_distill.losses.base import weighted_mean
from keras_distill.losses.divergences import TOP_K_FORMS
from keras_distill.losses.divergences import forward_kl
from keras_distill.losses.divergences import generalized_jsd
from keras_distill.losses.divergences import is_top_k
from keras_distill.losses.divergences import log_probs
from keras_distill.losses.divergences import reverse_kl
from keras_distill.losses.divergences import top_k_log_probs
from keras_distill.losses.registry import register
from keras_distill.validation import check_choice
from keras_distill.validation import check_int
from keras_distill.validation import check_non_negative
from keras_distill.validation import check_positive


def soft_kl(
    teacher_logits,
    student_logits,
    temperature,
    sample_weight=None,
    reduction="sum_over_batch_size",
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

    Returns:
        A float32 scalar.
    """
    t = ops.cast(temperature, "float32")
    teacher = ops.cast(teacher_logits, "float32")
    student = ops.cast(student_logits, "float32")
    log_p_t = ops.log_softmax(teacher / t, axis=-1)
    log_p_s = ops.log_softmax(student / t, axis=-1)
    textbook = weighted_mean(
        ops.sum(ops.exp(log_p_t) * (log_p_t - log_p_s), axis=-1),
        sample_weight,
        reduction,
    )
    precise = weighted_mean(
        _precise_kl(ops.stop_gradient(teacher), ops.stop_gradient(student), t),
        ops.stop_gradient(sample_weight) if sample_weight is not None else None,
        reduction,
    )
    return (textbook + ops.stop_gradient(precise - textbook)) * t * t


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
    ):
        super().__init__(name=name)
        self.temperature = temperature
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        self.top_k_form = check_choice("top_k_form", top_k_form, TOP_K_FORMS)
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
            teacher_outputs, student_outputs, t, sample_weight, self.reduction
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
    ):
        super().__init__(name=name)
        self.temperature = temperature
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        self.top_k_form = check_choice("top_k_form", top_k_form, TOP_K_FORMS)

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
    ):
        super().__init__(
            temperature, name, reduction=reduction, top_k_form=top_k_form
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
        self.loss = loss
        # Always the given loss on probabilities, KL included (the
        # example's form); `compute` and the config are LogitsDistillation's.
        self._loss_fn = resolve_keras_loss(loss)


def divergence_mean(
    divergence, teacher, student_logits, temperature, weight, reduction, form
):
    """`T² · weighted_mean(divergence(log p, log q))`, the teacher given as
    logits or as top-k logits (`keras_distill.losses.divergences`)."""
    t = ops.cast(temperature, "float32")
    if is_top_k(teacher):
        log_p, log_q = top_k_log_probs(teacher, student_logits, t, form)
    else:
        log_p, log_q = log_probs(teacher, t), log_probs(student_logits, t)
    return weighted_mean(divergence(log_p, log_q), weight, reduction) * t * t


def target_mask(y_true, logits):
    """The labels as a float32 one-hot mask shaped like `logits`.

    Accepts integer labels of shape `(batch,)` or `(batch, 1)` and one-hot
    (or soft) labels of the logits' shape; soft labels are reduced to their
    argmax.

    Args:
        y_true: The labels.
        logits: The logits `(batch, classes)` the labels index.

    Returns:
        A float32 tensor of the logits' shape with a single 1 per row.

    Raises:
        ValueError: If `y_true` is missing or its shape fits neither form.
    """
    if y_true is None:
        raise ValueError(
            "This distillation loss needs the labels. Expected y_true. "
            "Received: y_true=None"
        )
    classes = logits.shape[-1]
    rank = len(y_true.shape)
    if (
        rank == len(logits.shape)
        and y_true.shape[-1] == classes
        and (classes != 1)
    ):
        index = ops.argmax(y_true, axis=-1)
    elif rank == len(logits.shape) - 1 or (
        rank == len(logits.shape) and y_true.shape[-1] == 1
    ):
        index = ops.reshape(ops.cast(y_true, "int32"), ops.shape(logits)[:-1])
    else:
        raise ValueError(
            "Invalid labels for a distillation loss. Expected integer labels "
            f"of shape {tuple(logits.shape[:-1])} or one-hot labels of shape "
            f"{tuple(logits.shape)}. Received: y_true of shape "
            f"{tuple(y_true.shape)}"
        )
    return ops.one_hot(index, classes, dtype="float32")


def _masked_log_softmax(z, keep):
    """log_softmax of `z` over the entries where `keep` is 1 (else 0)."""
    masked = ops.where(keep > 0, z, ops.full_like(z, -1e9))
    log_q = masked - ops.logsumexp(masked, axis=-1, keepdims=True)
    return ops.where(keep > 0, log_q, ops.zeros_like(z))


def dkd(
    teacher_logits,
    student_logits,
    y_true,
    alpha,
    beta,
    temperature,
    sample_weight=None,
):
    """Decoupled knowledge distillation (Zhao et al., CVPR 2022).

    Formula:

    ```
    p = softmax(logits / T)
    b = (p[target], 1 - p[target])             # binary: target vs rest
    q = softmax over the non-target classes of logits / T
    TCKD = T² · KL(b_teacher || b_student)
    NCKD = T² · KL(q_teacher || q_student)
    loss = mean_batch(alpha · TCKD + beta · NCKD)
    ```

    Every term is computed from log-sum-exps of the logits (no log of a
    difference of probabilities), in float32.

    Args:
        teacher_logits: Tensor `(batch, classes)`.
        student_logits: Tensor of the same shape.
        y_true: Integer labels `(batch,)` or one-hot labels.
        alpha: Weight of the target-class term (TCKD).
        beta: Weight of the non-target-class term (NCKD).
        temperature: Positive scalar T.
        sample_weight: Optional weights of the positions (see
            `keras_distill.losses.weighted_mean`).

    Returns:
        A float32 scalar.
    """
    t = ops.cast(temperature, "float32")
    z_t = ops.cast(teacher_logits, "float32") / t
    z_s = ops.cast(student_logits, "float32") / t
    target = target_mask(y_true, z_s)
    other = 1.0 - target

    def binary_log_probs(z):
        lse = ops.logsumexp(z, axis=-1)
        log_target = ops.sum(z * target, axis=-1) - lse
        rest = ops.where(other > 0, z, ops.full_like(z, -1e9))
        log_other = ops.logsumexp(rest, axis=-1) - lse
        return ops.stack([log_target, log_other], axis=-1)

    log_b_t = binary_log_probs(z_t)
    log_b_s = binary_log_probs(z_s)
    tckd = ops.sum(ops.exp(log_b_t) * (log_b_t - log_b_s), axis=-1)
    log_q_t = _masked_log_softmax(z_t, other)
    log_q_s = _masked_log_softmax(z_s, other)
    q_t = ops.exp(log_q_t) * other
    nckd = ops.sum(q_t * (log_q_t - log_q_s), axis=-1)
    per_example = alpha * tckd + beta * nckd
    return weighted_mean(per_example, sample_weight) * t * t


@register("dkd", "decoupled", "decoupled_kd")
class DKD(DistillationLoss):
    """Decoupled knowledge distillation (DKD, Zhao et al., CVPR 2022).

    Splits Hinton's KD into a target-class term (TCKD: does the student put
    as much mass on the true class as the teacher?) and a non-target term
    (NCKD: does it rank the wrong classes as the teacher does?), and weights
    them separately. Classic KD weights NCKD by `1 - p_teacher[target]`,
    which vanishes for a confident teacher; DKD gives it a fixed weight
    `beta`. The defaults are those of the authors' mdistiller code
    (`alpha=1`, `beta=8`, `T=4`), including its linear warm-up: the loss is
    multiplied by `min(epoch / warmup_epochs, 1)`, epochs counted from 1,
    which `keras_distill.Distiller.fit` applies at the start of each epoch.

    Formula:

    ```
    b = (p[target], 1 - p[target]),  p = softmax(logits / T)
    q = softmax(logits / T) over the non-target classes
    loss = warmup · T² · mean_batch(alpha · KL(b_t || b_s)
                                    + beta · KL(q_t || q_s))
    ```

    The loss needs the labels: train with `(x, y)` data.

    Args:
        alpha: Non-negative float, the weight of TCKD. Defaults to 1.0.
        beta: Non-negative float, the weight of NCKD. Defaults to 8.0.
        temperature: Positive float, the softmax temperature. Defaults to
            4.0.
        warmup_epochs: Non-negative integer; the loss ramps up linearly over
            this many epochs of `fit`. 0 disables the warm-up. Defaults to
            20 (mdistiller's value for 240-epoch CIFAR runs; use fewer for
            short runs).
        name: Optional name, used for the loss' variables.

    Raises:
        ValueError: If an argument is out of range.

    Example:

    ```python
    loss = keras_distill.losses.DKD(beta=8.0, warmup_epochs=5)
    distiller = keras_distill.Distiller(teacher, student, loss)
    ```
    """

    variables = ("temperature", "alpha", "beta", "warmup_factor")
    needs_logits = True
    needs_labels = True
    temperature = variable_property("temperature", check_positive)
    alpha = variable_property("alpha", check_non_negative)
    beta = variable_property("beta", check_non_negative)
    warmup_factor = variable_property("warmup_factor", check_non_negative)

    def __init__(
        self, alpha=1.0, beta=8.0, temperature=4.0, warmup_epochs=20, name=None
    ):
        super().__init__(name=name)
        self.alpha = alpha
        self.beta = beta
        self.temperature = temperature
        self.warmup_epochs = check_int("warmup_epochs", warmup_epochs)
        self.warmup_factor = self._factor(0)

    def _factor(self, epoch):
        if not self.warmup_epochs:
            return 1.0
        return min((epoch + 1) / self.warmup_epochs, 1.0)

    def on_epoch_begin(self, epoch):
        self.warmup_factor = self._factor(epoch)

    def compute(
        self, teacher_outputs, student_outputs, y_true=None, sample_weight=None
    ):
        value = dkd(
            teacher_outputs,
            student_outputs,
            y_true,
            self.variable("alpha"),
            self.variable("beta"),
            self.variable("temperature"),
            sample_weight,
        )
        return ops.cast(self.variable("warmup_factor"), "float32") * value


@register("teacher_free", "tf_kd", "teacher_free_kd")
class TeacherFreeKD(DistillationLoss):
    """Teacher-free KD: distillation from a hand-made virtual teacher.

    Yuan et al. (CVPR 2020, "Revisiting knowledge distillation via label
    smoothing regularization", Tf-KD_reg) replace the teacher with a
    virtual one that puts `correct_prob` on the true class and spreads the
    rest evenly. The student is distilled from it as from a real teacher,
    so no teacher model is needed: build the `Distiller` with
    `teacher=None`.

    Formula:

    ```
    q_c = correct_prob           for the true class
        = (1 - correct_prob) / (K - 1)   otherwise
    loss = T² · mean_batch KL(softmax(log q / T) || softmax(s / T))
    ```

    The virtual teacher's logits are `log q`, so T softens it as it
    softens a real teacher (the authors' code instead applies the softmax
    to the probabilities `q / T`, which makes the target almost uniform).

    Args:
        correct_prob: The virtual teacher's probability of the true class,
            in (0, 1). Defaults to 0.9.
        temperature: Positive float. Defaults to 1.0.
        name: Optional name, used for the loss' variables.

    Raises:
        ValueError: If an argument is out of range.

    Example:

    ```python
    distiller = keras_distill.Distiller(
        teacher=None,
        student=student,
        distillation_losses=keras_distill.losses.TeacherFreeKD(0.9),
    )
    ```
    """

    variables = ("temperature", "correct_prob")
    needs_labels = True
    needs_teacher = False
    temperature = variable_property("temperature", check_positive)

    def __init__(self, correct_prob=0.9, temperature=1.0, name=None):
        super().__init__(name=name)
        self.correct_prob = correct_prob
        self.temperature = temperature

    @property
    def correct_prob(self):
        if "correct_prob" in self._bound:
            return as_float(self._bound["correct_prob"])
        return self.__dict__["_correct_prob"]

    @correct_prob.setter
    def correct_prob(self, value):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not 0 < value < 1
        ):
            raise ValueError(
                "Invalid value for argument `correct_prob`. Expected a float "
                f"in (0, 1). Received: correct_prob={value!r}"
            )
        self.__dict__["_correct_prob"] = float(value)
        if "correct_prob" in self.__dict__.get("_bound", {}):
            self._bound["correct_prob"].assign(float(value))

    def compute(
        self, teacher_outputs, student_outputs, y_true=None, sample_weight=None
    ):
        target = target_mask(y_true, student_outputs)
        classes = student_outputs.shape[-1]
        p = ops.cast(self.variable("correct_prob"), "float32")
        log_right = ops.log(p)
        log_wrong = ops.log((1.0 - p) / (classes - 1))
        virtual = target * log_right + (1.0 - target) * log_wrong
        return soft_kl(
            virtual,
            student_outputs,
            self.variable("temperature"),
            sample_weight,
        )
