"""The `DistillationLoss` base class and the helpers every loss uses."""

import inspect

import keras
import numpy as np


class DistillationLoss:
    """Base class of every distillation loss.

    A distillation loss compares what the teacher produces with what the
    student produces for the same batch and returns a scalar: the mean over
    the batch of a per-example loss, so that it sits on the same footing as a
    Keras loss with the default `"sum_over_batch_size"` reduction.

    Subclasses implement `compute`. They name the layers whose outputs they
    need in `teacher_layer` and `student_layer` (`None`, the default, means
    the model's final output as logits: a final softmax is undone, and for
    several outputs the one chosen by `Distiller(teacher_output=...,
    student_output=...)` is passed; a list of names passes a list of
    outputs); the `Distiller` extracts them in a single forward pass of
    each model, also from layers inside nested models.

    A loss whose `compute` accepts a `sample_weight` argument receives the
    batch's per-position weights: the sample weights given to `fit` (class
    weights included) with any Keras mask of the student's compared output
    folded in, as Keras folds them into the student's loss. Reduce with
    `keras_distill.losses.weighted_mean` to stay on the supervised loss'
    footing (per valid position for masked sequences). A loss without the
    argument weighs every position alike.

    A loss that needs no teacher (`needs_teacher = False`, for example
    `TeacherFreeKD`) receives `None` as `teacher_outputs`. A loss may own
    Keras layers (for example a learned adapter): it creates them in
    `build` and lists them in `layers`; the `Distiller` trains and saves
    their weights with its own, and they never become part of the student.
    A loss that changes with the epoch overrides `on_epoch_begin`, which
    the `Distiller` calls at the start of every epoch of `fit`.

    Hyper-parameters listed in the class attribute `variables` (for example
    `("temperature",)`) become non-trainable variables of the `Distiller` the
    loss is attached to, so a callback can change them between epochs without
    recompiling. Reading the attribute gives the current value as a Python
    float; assigning it updates the variable.

    Every argument of `__init__` is kept as an attribute of the same name and
    returned by `get_config`, so `from_config(get_config())` rebuilds an
    equal loss.

    Example:

    ```python
    @keras_distill.losses.register("mse_logits", package="my_package")
    class MeanSquaredLogits(keras_distill.losses.DistillationLoss):
        def compute(self, teacher_outputs, student_outputs, y_true=None):
            diff = keras.ops.cast(teacher_outputs, "float32") - keras.ops.cast(
                student_outputs, "float32"
            )
            return keras.ops.mean(keras.ops.sum(diff * diff, axis=-1))
    ```
    """

    variables = ()
    teacher_layer = None
    student_layer = None
    needs_labels = False
    needs_logits = False
    needs_teacher = True
    # Whether `compute` takes a top-k teacher (a `TeacherCache(top_k=k)`).
    reads_top_k_teacher = False

    def __init__(self, name=None):
        self.name = name or _snake_case(type(self).__name__)
        self._bound = {}

    @property
    def layers(self):
        """The Keras layers this loss owns (adapters), built by `build`."""
        return []

    @property
    def trainable_weights(self):
        """The trainable weights of the layers this loss owns."""
        return [w for layer in self.layers for w in layer.trainable_weights]

    def build(self, teacher_shape, student_shape):
        """Creates the loss' own layers once the feature shapes are known.

        The `Distiller` calls this at construction with the shapes of the
        tensors `compute` will receive (lists of shapes where the loss names
        lists of layers; `None` for the teacher when it needs none). The
        default does nothing.

        Args:
            teacher_shape: Shape (or list of shapes) of the teacher's
                features, batch axis first.
            student_shape: Shape (or list of shapes) of the student's.

        Raises:
            ValueError: If the shapes cannot be used together.
        """

    def on_epoch_begin(self, epoch):
        """Called by `Distiller.fit` at the start of each epoch (from 0).

        The default does nothing. A loss with an epoch-dependent factor
        (for example `DKD`'s warm-up) assigns its variables here.

        Args:
            epoch: The index of the epoch about to start.
        """

    def compute(self, teacher_outputs, student_outputs, y_true=None):
        """Computes the loss for one batch.

        Args:
            teacher_outputs: The teacher's output (or the feature named by
                `teacher_layer`) for the batch; `None` for a loss that does
                not need a teacher.
            student_outputs: The student's output (or the feature named by
                `student_layer`) for the same batch.
            y_true: The labels, for losses that set `needs_labels`.

        Returns:
            A scalar float32 tensor: the batch mean of the per-example loss.
        """
        raise NotImplementedError(
            f"{type(self).__name__} must implement `compute(teacher_outputs, "
            "student_outputs, y_true=None)`."
        )

    def __call__(self, teacher_outputs, student_outputs, y_true=None):
        return self.compute(teacher_outputs, student_outputs, y_true=y_true)

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        """Same as `compute`, named as `keras.distillation` names it."""
        return self.compute(
            teacher_outputs, student_outputs, y_true=kwargs.get("y_true")
        )

    def validate_outputs(self, teacher_outputs, student_outputs):
        """Checks that two outputs have the same structure (as
        `keras.distillation` does).

        Args:
            teacher_outputs: A tensor or a structure of tensors.
            student_outputs: The student's counterpart.

        Raises:
            ValueError: If the structures differ (a tensor against a dict
                or a list, lists of other lengths).
        """
        try:
            keras.tree.assert_same_structure(teacher_outputs, student_outputs)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"Invalid outputs for `{type(self).__name__}`. Expected the "
                "teacher's and the student's to have the same structure. "
                f"Received: {error}"
            ) from None

    def validate_model_compatibility(self, teacher, student):
        """`keras.distillation`'s name for `validate_models`."""
        self.validate_models(teacher, student)

    def validate_models(self, teacher, student):
        """Checks at construction time that the models suit this loss.

        The default does nothing. Subclasses raise `ValueError` with a clear
        message when the teacher and student cannot be used together.

        Args:
            teacher: The teacher `keras.Model`.
            student: The student `keras.Model`.
        """

    def bind(self, layer):
        """Creates the loss' variables as weights of `layer`.

        The `Distiller` calls this once, under its distribution scope. After
        binding, the attributes listed in `variables` read and write those
        weights.

        Args:
            layer: The `keras.Layer` that owns the variables.
        """
        for attr in self.variables:
            value = float(getattr(self, attr))
            variable = layer.add_weight(
                shape=(),
                initializer=keras.initializers.Constant(value),
                dtype="float32",
                trainable=False,
                autocast=False,
                name=f"{self.name}_{attr}",
            )
            self._bound[attr] = variable

    def variable(self, attr):
        """Returns the bound variable for `attr`, or its constant value.

        Use this inside `compute` so that the value is read when the step
        runs, not when it is traced.

        Args:
            attr: One of the names in `variables`.

        Returns:
            A float32 scalar variable once bound, else a Python float.
        """
        if attr in self._bound:
            return self._bound[attr]
        return self.__dict__[f"_{attr}"]

    def get_config(self):
        """Returns the constructor arguments as a JSON-serializable dict."""
        config = {}
        for name in inspect.signature(type(self).__init__).parameters:
            if name in ("self", "args", "kwargs"):
                continue
            config[name] = getattr(self, name)
        return config

    @classmethod
    def from_config(cls, config):
        """Builds a loss from the dict `get_config` returned."""
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def accepts_sample_weight(loss):
    """Whether a loss' `compute` takes a `sample_weight` argument.

    Losses that do are given the batch's per-position weights (sample
    weights with any Keras mask folded in, see `merge_mask`); the others
    are called without them and weigh every position alike.
    """
    try:
        parameters = inspect.signature(loss.compute).parameters
    except (TypeError, ValueError):
        return False
    return "sample_weight" in parameters


def layer_names(spec):
    """The layer names a `teacher_layer` / `student_layer` value asks for.

    Args:
        spec: `None` (the model's output), a name, or a list of names.

    Returns:
        A list of names (empty for `None`).
    """
    if spec is None:
        return []
    if isinstance(spec, str):
        return [spec]
    return list(spec)


def resolve_keras_loss(loss):
    """A Keras loss from a name, function or instance.

    Args:
        loss: A Keras loss identifier.

    Returns:
        The loss function or instance.

    Raises:
        ValueError: If Keras does not know `loss`.
    """
    try:
        loss_fn = keras.losses.get(loss)
    except (ValueError, TypeError):
        loss_fn = None
    if loss_fn is None:
        raise ValueError(
            "Invalid value for argument `loss`. Expected a Keras loss "
            f"name, instance or function. Received: loss={loss!r}"
        )
    return loss_fn


def _same_rank(values, weight):
    """`weight` expanded (trailing axes) or squeezed to `values`' rank."""
    while len(weight.shape) < len(values.shape):
        weight = keras.ops.expand_dims(weight, -1)
    while len(weight.shape) > len(values.shape) and weight.shape[-1] == 1:
        weight = keras.ops.squeeze(weight, -1)
    if len(weight.shape) > len(values.shape):
        raise ValueError(
            "Invalid `sample_weight` for a distillation loss. Expected "
            f"weights of shape {tuple(values.shape)} (one per position the "
            "loss compares) or a prefix of it. Received: sample_weight of "
            f"shape {tuple(weight.shape)}"
        )
    return weight


REDUCTIONS = ("sum_over_batch_size", "mean_with_sample_weight")


def weighted_mean(values, sample_weight=None, reduction="sum_over_batch_size"):
    """Keras' reduction of per-position loss values.

    Formula:

    ```
    "sum_over_batch_size":     loss = Σ w · values / size(values)
    "mean_with_sample_weight": loss = Σ w · values / Σ w
    ```

    The first is the default reduction of a `keras.losses.Loss`, the one
    applied to the student's supervised loss (without its division by the
    number of replicas, which the `Distiller` applies once to every term).
    The second (Keras' name too) averages over the weighted positions: with
    a padding mask as weights, the mean per valid token. Weights of a lower
    rank (one per example) apply to every position of their example.

    Args:
        values: Per-position loss values, e.g. `(batch,)` or
            `(batch, time)`.
        sample_weight: None, or weights of `values`' shape or a prefix
            of it (trailing axes of size 1 allowed).
        reduction: One of `REDUCTIONS`. Defaults to
            `"sum_over_batch_size"`.

    Returns:
        A float32 scalar.
    """
    values = keras.ops.cast(values, "float32")
    if sample_weight is None:
        return keras.ops.mean(values)
    weight = _same_rank(values, keras.ops.cast(sample_weight, "float32"))
    weight = keras.ops.broadcast_to(weight, keras.ops.shape(values))
    total = keras.ops.sum(values * weight)
    if reduction == "mean_with_sample_weight":
        return keras.ops.divide_no_nan(total, keras.ops.sum(weight))
    return total / keras.ops.cast(keras.ops.size(values), "float32")


def merge_mask(sample_weight, mask):
    """Folds a Keras mask into the sample weights, as Keras' losses do.

    Valid positions get the weight `total / valid` (times their sample
    weight), masked ones 0, so that `weighted_mean` gives
    `Σ w · values / valid`: the mean over the valid positions, the
    normalisation Keras applies to a masked student loss.

    Args:
        sample_weight: None or a weight tensor.
        mask: None or a boolean tensor of the positions' shape.

    Returns:
        The merged weights (None when both are None).
    """
    if mask is None:
        return sample_weight
    mask = keras.ops.cast(mask, "float32")
    total = keras.ops.cast(keras.ops.size(mask), "float32")
    valid = keras.ops.sum(mask)
    weight = mask * keras.ops.divide_no_nan(total, valid)
    if sample_weight is None:
        return weight
    return weight * _same_rank(weight, keras.ops.cast(sample_weight, "float32"))


def keras_loss_mean(
    loss_fn, y_true, y_pred, sample_weight=None, reduction="sum_over_batch_size"
):
    """The mean of a Keras loss over every example, in float32.

    A `keras.losses.Loss` instance divides its reduced value by the number
    of replicas of the current strategy; the `Distiller` scales every
    distillation term once itself, so the instance's unreduced `call` is
    used here and averaged, which keeps one footing under any strategy.

    Args:
        loss_fn: A Keras loss function or `keras.losses.Loss` instance.
        y_true: The target tensor.
        y_pred: The prediction tensor.
        sample_weight: Optional per-position weights (see
            `weighted_mean`).
        reduction: See `weighted_mean`.

    Returns:
        A float32 scalar.
    """
    if isinstance(loss_fn, keras.losses.Loss):
        value = loss_fn.call(y_true, y_pred)
    else:
        value = loss_fn(y_true, y_pred)
    return weighted_mean(value, sample_weight, reduction)


def variable_property(attr, check):
    """Makes an attribute that reads and writes a bindable hyper-parameter.

    Args:
        attr: The attribute name, also listed in the class' `variables`.
        check: A `keras_distill._validation` check, `check(attr, value)`,
            that returns a valid value as a float and raises `ValueError`
            otherwise.

    Returns:
        A `property`.
    """

    def getter(self):
        if attr in self._bound:
            return as_float(self._bound[attr])
        return self.__dict__[f"_{attr}"]

    def setter(self, value):
        value = check(attr, value)
        self.__dict__[f"_{attr}"] = value
        if attr in self.__dict__.get("_bound", {}):
            self._bound[attr].assign(value)

    return property(getter, setter)


def as_float(variable):
    """A float32 variable's value as the shortest Python float for it.

    `0.3` stored in float32 reads back as `0.3`, not `0.30000001192092896`.
    """
    # `Variable.numpy()`: NumPy 2 warns when it converts a variable itself.
    value = variable.numpy() if hasattr(variable, "numpy") else variable
    return float(np.format_float_positional(np.float32(value)))


def _snake_case(name):
    out = []
    for i, char in enumerate(name):
        if char.isupper() and i and not name[i - 1].isupper():
            out.append("_")
        out.append(char.lower())
    return "".join(out)


_KL_NAMES = ("kl_divergence", "kld", "kullback_leibler_divergence")


def is_kl_divergence(loss):
    """Whether `loss` is Keras' KL divergence (name, function or instance)."""
    if isinstance(loss, keras.losses.KLDivergence):
        return True
    if isinstance(loss, str):
        return loss.lower() in _KL_NAMES
    return getattr(loss, "__name__", None) in _KL_NAMES
