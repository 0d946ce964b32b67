"""Losses on the logits that also read the labels: decoupled KD (`DKD`,
target and non-target parts) and teacher-free KD (`TeacherFreeKD`, a
hand-made teacher from the labels)."""


from keras import ops

from keras_distill._validation import check_int
from keras_distill._validation import check_non_negative
from keras_distill._validation import check_positive
from keras_distill.losses.base import DistillationLoss
from keras_distill.losses.base import as_float
from keras_distill.losses.base import variable_property
from keras_distill.losses.base import weighted_mean
from keras_distill.losses.logits import soft_kl
from keras_distill.losses.registry import register


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
