"""Losses on intermediate features: hints, attention maps, relations."""

import keras
from keras import ops

from keras_distill._validation import check_non_negative
from keras_distill._validation import check_positive
from keras_distill.losses.base import DistillationLoss
from keras_distill.losses.base import keras_loss_mean
from keras_distill.losses.base import resolve_keras_loss
from keras_distill.losses.base import variable_property
from keras_distill.losses.registry import register


def _alias(name, value, alias, alias_value):
    """The value of an argument given under its name or Keras' alias."""
    if alias_value is None:
        return value
    if value is not None:
        raise ValueError(
            f"Invalid arguments. Expected `{name}` or its alias `{alias}`, "
            f"not both. Received: {name}={value!r}, {alias}={alias_value!r}"
        )
    return alias_value


def _shape(shape):
    """A shape as a tuple without its batch axis."""
    return tuple(shape)[1:]


def _float32(x):
    return ops.cast(x, "float32")


def _auto_adapter(name, teacher_shape, student_shape):
    """The learned map from the student's feature shape to the teacher's.

    A `Dense` layer on the last axis for vectors and sequences of equal
    length; a bilinear resize (when the spatial sizes differ) followed by a
    1×1 convolution for images.
    """
    t, s = _shape(teacher_shape), _shape(student_shape)
    layers = []
    if len(t) == len(s) == 3:
        if t[:2] != s[:2]:
            layers.append(
                keras.layers.Resizing(
                    t[0], t[1], interpolation="bilinear", name=f"{name}_resize"
                )
            )
        layers.append(keras.layers.Conv2D(t[2], 1, name=f"{name}_conv"))
    elif len(t) == len(s) and t[:-1] == s[:-1]:
        layers.append(keras.layers.Dense(t[-1], name=f"{name}_dense"))
    else:
        raise ValueError(
            "Invalid layers for `FeatureDistillation`. Expected features of "
            "the same rank whose shapes differ only in the last axis, or "
            "image features (batch, height, width, channels). Received: "
            f"teacher feature shape {tuple(teacher_shape)}, student feature "
            f"shape {tuple(student_shape)}"
        )
    adapter = keras.Sequential(layers, name=name)
    adapter.build((None,) + s)
    return adapter


@register("feature", "features", "hint", "fitnets", "feature_distillation")
class FeatureDistillation(DistillationLoss):
    """FitNets hints: the student's feature regresses the teacher's.

    The student's output at `student_layer` is mapped by an adapter to the
    shape of the teacher's output at `teacher_layer`, and a Keras loss
    (mean squared error by default) compares the two (Romero et al., 2015).
    The adapter is learned with the student, saved with the `Distiller`,
    and is never part of the student, so the exported student has none of
    its weights. Unlike `keras.distillation.FeatureDistillation`, shapes
    may differ, and the student still runs once per step.

    Layers are found by name, also inside nested models. Use one
    `FeatureDistillation` per pair of layers.

    Formula:

    ```
    loss = mean(loss_fn(teacher_feature, adapter(student_feature)))
    ```

    Args:
        teacher_layer: Name of the teacher's layer; None compares the
            final outputs (as logits).
        student_layer: Name of the student's layer. Defaults to
            `teacher_layer`.
        loss: A Keras loss name, function or instance called as
            `loss(teacher_feature, adapted_student_feature)`. Defaults to
            `"mse"`.
        adapter: `"auto"` (a learned `Dense` or 1×1 `Conv2D`, with a
            bilinear resize when spatial sizes differ, only when the shapes
            differ), `None` (no adapter: the shapes must be equal) or a
            `keras.Layer` that maps the student's feature to the teacher's
            shape.
        name: Optional name, used for the loss' variables and its adapter.
        teacher_layer_name: `keras.distillation`'s name for
            `teacher_layer`, accepted so that code written for it runs
            unchanged (`teacher_layer` is the canonical name, and the one
            `get_config` returns).
        student_layer_name: `keras.distillation`'s name for
            `student_layer`.

    Raises:
        ValueError: If a layer name is not a string, both spellings of
            one argument are given, `loss` is unknown, or the shapes cannot
            be matched.

    Example:

    ```python
    hint = keras_distill.losses.FeatureDistillation(
        teacher_layer="conv_3", student_layer="conv_2"
    )
    distiller = keras_distill.Distiller(
        teacher,
        student,
        [keras_distill.losses.LogitsDistillation(4.0), hint],
        distillation_loss_weights=[1.0, 0.5],
    )
    ```
    """

    def __init__(
        self,
        teacher_layer=None,
        student_layer=None,
        loss="mse",
        adapter="auto",
        name=None,
        *,
        teacher_layer_name=None,
        student_layer_name=None,
    ):
        super().__init__(name=name)
        teacher_layer = _alias(
            "teacher_layer",
            teacher_layer,
            "teacher_layer_name",
            teacher_layer_name,
        )
        student_layer = _alias(
            "student_layer",
            student_layer,
            "student_layer_name",
            student_layer_name,
        )
        if teacher_layer is not None and (
            not isinstance(teacher_layer, str) or not teacher_layer
        ):
            raise ValueError(
                "Invalid value for argument `teacher_layer`. Expected the "
                "name of a layer of the teacher, or None for its output. "
                f"Received: teacher_layer={teacher_layer!r}"
            )
        if student_layer is None:
            student_layer = teacher_layer
        if student_layer is not None and (
            not isinstance(student_layer, str) or not student_layer
        ):
            raise ValueError(
                "Invalid value for argument `student_layer`. Expected the "
                "name of a layer of the student. Received: "
                f"student_layer={student_layer!r}"
            )
        if not (
            adapter is None
            or adapter == "auto"
            or isinstance(adapter, keras.layers.Layer)
        ):
            raise ValueError(
                "Invalid value for argument `adapter`. Expected 'auto', None "
                f"or a `keras.Layer`. Received: adapter={adapter!r}"
            )
        self.teacher_layer = teacher_layer
        self.student_layer = student_layer
        self.loss = loss
        self._loss_fn = resolve_keras_loss(loss)
        self.adapter = adapter
        self._adapter = adapter if isinstance(adapter, keras.Layer) else None

    @property
    def teacher_layer_name(self):
        """`keras.distillation`'s name for `teacher_layer`."""
        return self.teacher_layer

    @property
    def student_layer_name(self):
        """`keras.distillation`'s name for `student_layer`."""
        return self.student_layer

    @property
    def layers(self):
        return [self._adapter] if self._adapter is not None else []

    def build(self, teacher_shape, student_shape):
        t, s = _shape(teacher_shape), _shape(student_shape)
        if isinstance(self.adapter, keras.layers.Layer):
            if not self._adapter.built:
                self._adapter.build((None,) + s)
            out = _shape(self._adapter.compute_output_shape((None,) + s))
            if out != t:
                raise ValueError(
                    "Invalid value for argument `adapter`. Expected a layer "
                    f"that maps the student's feature shape {s} to the "
                    f"teacher's {t}. Received: a layer whose output shape "
                    f"is {out}"
                )
        elif t == s:
            self._adapter = None
        elif self.adapter is None:
            raise ValueError(
                "Invalid layers for `FeatureDistillation` with adapter=None. "
                "Expected features of the same shape. Received: teacher "
                f"{self.teacher_layer!r} {t}, student {self.student_layer!r} "
                f"{s}. Use adapter='auto' to learn a mapping."
            )
        else:
            self._adapter = _auto_adapter(
                f"{self.name}_adapter", teacher_shape, student_shape
            )

    def compute(
        self, teacher_outputs, student_outputs, y_true=None, sample_weight=None
    ):
        student = student_outputs
        if self._adapter is not None:
            student = self._adapter(student)
        return keras_loss_mean(
            self._loss_fn,
            _float32(teacher_outputs),
            _float32(student),
            sample_weight,
        )

    def get_config(self):
        config = super().get_config()
        config.pop("teacher_layer_name")
        config.pop("student_layer_name")
        config["loss"] = keras.losses.serialize(self._loss_fn)
        if isinstance(self.adapter, keras.layers.Layer):
            config["adapter"] = keras.saving.serialize_keras_object(
                self.adapter
            )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["loss"] = keras.losses.deserialize(config["loss"])
        if isinstance(config.get("adapter"), dict):
            config["adapter"] = keras.saving.deserialize_keras_object(
                config["adapter"]
            )
        return cls(**config)


def attention_map(feature, p=2.0, size=None):
    """Zagoruyko & Komodakis' spatial attention map, L2-normalised.

    Formula:

    ```
    a = mean_channels |feature|^p   (resized to `size` if given)
    map = flatten(a) / max(||flatten(a)||_2, 1e-12)
    ```

    Args:
        feature: Tensor `(batch, ..., channels)`, channels last.
        p: Positive float, the power. Defaults to 2.
        size: Optional `(height, width)`: the map of an image feature is
            resized (bilinear) to it before normalisation.

    Returns:
        A float32 tensor `(batch, positions)`.
    """
    a = ops.mean(ops.power(ops.abs(_float32(feature)), p), axis=-1)
    if size is not None:
        a = ops.image.resize(
            ops.expand_dims(a, -1), size, interpolation="bilinear"
        )[..., 0]
    a = ops.reshape(a, (ops.shape(a)[0], -1))
    norm = ops.sqrt(ops.sum(a * a, axis=-1, keepdims=True))
    return a / ops.maximum(norm, 1e-12)


@register("attention", "attention_transfer", "at")
class AttentionTransfer(DistillationLoss):
    """Attention transfer (Zagoruyko & Komodakis, ICLR 2017).

    For each (teacher layer, student layer) pair, the student's spatial
    attention map (the channel mean of `|feature|^p`, flattened and
    L2-normalised) is matched to the teacher's. Channel counts may differ;
    where spatial sizes differ the student's map is resized (bilinear) to
    the teacher's.

    Formula:

    ```
    loss = beta / 2 · Σ_pairs mean_batch,positions (map_s - map_t)²
    ```

    Args:
        pairs: A list of `(teacher_layer, student_layer)` name pairs, or a
            single pair.
        p: Positive float, the power in the attention map. Defaults to 2.
        beta: Non-negative float, the loss' scale. Defaults to 1000, the
            paper's value.
        name: Optional name, used for the loss' variables.

    Raises:
        ValueError: If `pairs` is not a list of name pairs, or a layer's
            output is not a feature map.

    Example:

    ```python
    loss = keras_distill.losses.AttentionTransfer(
        [("block_1", "conv_1"), ("block_2", "conv_2")]
    )
    ```
    """

    variables = ("beta",)
    beta = variable_property("beta", check_non_negative)

    def __init__(self, pairs=(), p=2.0, beta=1000.0, name=None):
        super().__init__(name=name)
        if (
            isinstance(pairs, (list, tuple))
            and len(pairs) == 2
            and all(isinstance(x, str) for x in pairs)
        ):
            pairs = [pairs]
        if (
            not isinstance(pairs, (list, tuple))
            or not pairs
            or not all(
                isinstance(x, (list, tuple))
                and len(x) == 2
                and all(isinstance(n, str) and n for n in x)
                for x in pairs
            )
        ):
            raise ValueError(
                "Invalid value for argument `pairs`. Expected a non-empty "
                "list of (teacher_layer, student_layer) name pairs. "
                f"Received: pairs={pairs!r}"
            )
        self.pairs = [list(x) for x in pairs]
        self.p = check_positive("p", p)
        self.beta = beta
        self.teacher_layer = [t for t, _ in self.pairs]
        self.student_layer = [s for _, s in self.pairs]
        self._sizes = [None] * len(self.pairs)

    def build(self, teacher_shape, student_shape):
        for i, (t, s) in enumerate(zip(teacher_shape, student_shape)):
            t, s = _shape(t), _shape(s)
            if len(t) < 2 or len(s) != len(t):
                raise ValueError(
                    "Invalid layers for `AttentionTransfer`. Expected feature "
                    "maps of the same rank (batch, ..., channels). Received: "
                    f"pair {self.pairs[i]} with shapes {t} and {s}"
                )
            if t[:-1] != s[:-1]:
                if len(t) != 3:
                    raise ValueError(
                        "Invalid layers for `AttentionTransfer`. Expected "
                        "equal positions for non-image features. Received: "
                        f"pair {self.pairs[i]} with shapes {t} and {s}"
                    )
                self._sizes[i] = t[:2]

    def compute(self, teacher_outputs, student_outputs, y_true=None):
        total = ops.zeros((), "float32")
        for size, t, s in zip(self._sizes, teacher_outputs, student_outputs):
            diff = attention_map(s, self.p, size) - attention_map(t, self.p)
            total = total + ops.mean(diff * diff)
        return ops.cast(self.variable("beta"), "float32") / 2.0 * total


def _pairwise_distances(e):
    """Euclidean distances between the rows of `e`, zero on the diagonal."""
    square = ops.sum(e * e, axis=-1)
    d2 = (
        square[:, None]
        + square[None, :]
        - 2.0 * ops.matmul(e, ops.transpose(e))
    )
    eye = ops.eye(ops.shape(e)[0], dtype="float32")
    return ops.sqrt(ops.maximum(d2, 1e-12)) * (1.0 - eye)


def _smooth_l1(x, y):
    diff = ops.abs(x - y)
    return ops.mean(ops.where(diff < 1.0, 0.5 * diff * diff, diff - 0.5))


def rkd(teacher_embeddings, student_embeddings, distance_weight, angle_weight):
    """Relational knowledge distillation (Park et al., CVPR 2019).

    Formula:

    ```
    ψ_D(i, j) = ||e_i - e_j|| / mean_{k≠l} ||e_k - e_l||
    ψ_A(i, j, k) = cos angle(e_i - e_j, e_k - e_j)
    loss = distance_weight · huber(ψ_D^s, ψ_D^t)
         + angle_weight · huber(ψ_A^s, ψ_A^t)
    ```

    with the Huber loss (δ = 1) averaged over all pairs and triplets of the
    batch. Embeddings are flattened to `(batch, features)`; their sizes may
    differ between teacher and student.

    Args:
        teacher_embeddings: Tensor `(batch, ...)`.
        student_embeddings: Tensor `(batch, ...)`.
        distance_weight: Weight of the distance term.
        angle_weight: Weight of the angle term.

    Returns:
        A float32 scalar.
    """
    t = _float32(teacher_embeddings)
    s = _float32(student_embeddings)
    t = ops.reshape(t, (ops.shape(t)[0], -1))
    s = ops.reshape(s, (ops.shape(s)[0], -1))

    def distances(e):
        d = _pairwise_distances(e)
        n = ops.cast(ops.shape(e)[0], "float32")
        mean = ops.sum(d) / ops.maximum(n * (n - 1.0), 1.0)
        return d / ops.maximum(mean, 1e-12)

    def angles(e):
        diff = e[None, :, :] - e[:, None, :]
        norm = ops.sqrt(ops.sum(diff * diff, axis=-1, keepdims=True))
        unit = diff / ops.maximum(norm, 1e-12)
        return ops.matmul(unit, ops.transpose(unit, (0, 2, 1)))

    distance_loss = _smooth_l1(distances(s), distances(t))
    angle_loss = _smooth_l1(angles(s), angles(t))
    return (
        ops.cast(distance_weight, "float32") * distance_loss
        + ops.cast(angle_weight, "float32") * angle_loss
    )


@register("rkd", "relational", "relational_distillation")
class RelationalDistillation(DistillationLoss):
    """Relational KD: match the geometry of the batch (Park et al., 2019).

    Instead of matching each example's output, the student matches the
    teacher's pairwise distances (normalised by their mean) and the angles
    formed by triplets of examples, so embeddings of any size can be
    compared, and a uniform rescaling of either model's embeddings changes
    nothing. See `keras_distill.losses.features.rkd` for the formula.

    The relations are those within the batch the loss sees: under a
    `tf.distribute` strategy, each replica's share of the global batch
    (as for `BatchNormalization`'s statistics), so the loss under N
    replicas equals the mean of the losses of the N per-replica batches,
    not the loss of the global batch. Keep that share large enough to
    hold several examples of each class.

    Args:
        distance_weight: Non-negative float. Defaults to 25.0 (the
            authors' value).
        angle_weight: Non-negative float. Defaults to 50.0.
        teacher_layer: The teacher's layer whose output is the embedding;
            `None` (the default) uses the final output.
        student_layer: The student's layer; defaults to `teacher_layer`.
        name: Optional name, used for the loss' variables.

    Raises:
        ValueError: If a weight is negative.

    Example:

    ```python
    loss = keras_distill.losses.RelationalDistillation(
        distance_weight=25.0, angle_weight=50.0
    )
    ```
    """

    variables = ("distance_weight", "angle_weight")
    distance_weight = variable_property("distance_weight", check_non_negative)
    angle_weight = variable_property("angle_weight", check_non_negative)

    def __init__(
        self,
        distance_weight=25.0,
        angle_weight=50.0,
        teacher_layer=None,
        student_layer=None,
        name=None,
    ):
        super().__init__(name=name)
        self.distance_weight = distance_weight
        self.angle_weight = angle_weight
        self.teacher_layer = teacher_layer
        self.student_layer = (
            teacher_layer if student_layer is None else student_layer
        )

    def compute(self, teacher_outputs, student_outputs, y_true=None):
        return rkd(
            teacher_outputs,
            student_outputs,
            self.variable("distance_weight"),
            self.variable("angle_weight"),
        )
