"""Consistent augmentation: the teacher and the student see one batch.

`ConsistentAugment` applies its layers once per training batch inside the
`Distiller`'s step, before either model runs, so the teacher and the
student receive the identical augmented (and mixed-up) input. This is
"function matching" (Beyer et al., CVPR 2022): the student learns the
teacher's function on inputs it would never see in the data, which needs
the teacher online (a fixed cache cannot follow the augmentation).

Every layer draws its randomness from a `keras.random.SeedGenerator`, so a
seeded run replays the same augmentation, and is a no-op outside training.
"""

import keras
from keras import ops

from keras_distill._validation import check_int


def shift_images(images, offsets, pixels):
    """Shifts each image by its own whole number of pixels, zero-filled.

    The one shift kernel of the package: `RandomShift`,
    `keras_distill.pipelines.shift_augment`, the shifted views of
    `keras_distill.teachers.TeacherCache` and the robustness report all
    call it, so a shift drawn in one place is replayed exactly in another.

    Args:
        images: A tensor or array `(batch, height, width, channels)`.
        offsets: int32 `(batch, 2)` in `[0, 2 * pixels]`: the rows and
            columns each image moves by, plus `pixels` (so `pixels` is no
            shift, 0 moves the content `pixels` down and right).
        pixels: The largest shift, a non-negative int.

    Returns:
        The shifted images, as a tensor of the images' dtype.
    """
    images = ops.convert_to_tensor(images)
    offsets = ops.cast(offsets, "int32")
    p = pixels
    batch = ops.shape(images)[0]
    height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    padded = ops.pad(images, [[0, 0], [p, p], [p, p], [0, 0]])
    rows = ops.arange(height, dtype="int32")[None, :] + offsets[:, :1]
    cols = ops.arange(width, dtype="int32")[None, :] + offsets[:, 1:]
    rows = ops.broadcast_to(
        rows[:, :, None, None], (batch, height, width + 2 * p, channels)
    )
    out = ops.take_along_axis(padded, rows, axis=1)
    cols = ops.broadcast_to(
        cols[:, None, :, None], (batch, height, width, channels)
    )
    return ops.take_along_axis(out, cols, axis=2)


@keras.saving.register_keras_serializable(package="keras_distill")
class RandomShift(keras.layers.Layer):
    """Shifts each image by whole pixels, up to `pixels` each way.

    Each example of the batch gets its own shift, drawn uniformly from
    `[-pixels, pixels]` along height and width; zeros fill the edge.

    Args:
        pixels: The largest shift, a non-negative integer. Defaults to 2.
        seed: Optional integer seed.
        **kwargs: Passed on to `keras.layers.Layer`.

    Example:

    ```python
    shift = keras_distill.augment.RandomShift(pixels=2, seed=0)
    shifted = shift(images, training=True)
    ```
    """

    def __init__(self, pixels=2, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.pixels = check_int("pixels", pixels)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=None):
        if not training or not self.pixels:
            return images
        if len(images.shape) != 4:
            raise ValueError(
                "Invalid input for `RandomShift`. Expected images of shape "
                "(batch, height, width, channels). Received: shape "
                f"{tuple(images.shape)}"
            )
        offsets = keras.random.randint(
            (ops.shape(images)[0], 2),
            0,
            2 * self.pixels + 1,
            seed=self.seed_generator,
            dtype="int32",
        )
        return shift_images(images, offsets, self.pixels)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(pixels=self.pixels, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="keras_distill")
class RandomFlip(keras.layers.Layer):
    """Mirrors each image left-right with probability 1/2.

    Use it only where the data allows (natural images, not digits).

    Args:
        seed: Optional integer seed.
        **kwargs: Passed on to `keras.layers.Layer`.
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=None):
        if not training:
            return images
        flip = keras.random.uniform(
            (ops.shape(images)[0], 1, 1, 1), seed=self.seed_generator
        )
        return ops.where(flip < 0.5, ops.flip(images, axis=2), images)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="keras_distill")
class Mixup(keras.layers.Layer):
    """Mixes each example with another of the batch (Zhang et al., 2018).

    One coefficient `lam ~ Beta(alpha, alpha)` is drawn per batch and a
    random permutation pairs the examples:
    `x' = lam · x + (1 - lam) · x[perm]`. The layer returns the mixed
    inputs with `perm` and `lam`, so the labels are mixed with the same
    coefficient: the supervised loss becomes
    `lam · loss(y, s) + (1 - lam) · loss(y[perm], s)`.

    Args:
        alpha: Positive float, the Beta distribution's parameter. Defaults
            to 0.2.
        seed: Optional integer seed.
        **kwargs: Passed on to `keras.layers.Layer`.
    """

    def __init__(self, alpha=0.2, seed=None, **kwargs):
        super().__init__(**kwargs)
        if (
            isinstance(alpha, bool)
            or not isinstance(alpha, (int, float))
            or (not alpha > 0)
        ):
            raise ValueError(
                "Invalid value for argument `alpha`. Expected a positive "
                f"float. Received: alpha={alpha!r}"
            )
        self.alpha = float(alpha)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def mix(self, x):
        """Returns `(mixed_x, perm, lam)` for one batch."""
        batch = ops.shape(x)[0]
        lam = keras.random.beta(
            (), self.alpha, self.alpha, seed=self.seed_generator
        )
        perm = keras.random.shuffle(
            ops.arange(batch, dtype="int32"), seed=self.seed_generator
        )
        lam_x = ops.cast(lam, x.dtype)
        mixed = lam_x * x + (1 - lam_x) * ops.take(x, perm, axis=0)
        return mixed, perm, ops.cast(lam, "float32")

    def call(self, x, training=None):
        if not training:
            return x
        return self.mix(x)[0]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(alpha=self.alpha, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="keras_distill")
class ConsistentAugment(keras.layers.Layer):
    """Augmentation applied once per batch, before teacher and student.

    Pass it to `keras_distill.Distiller(augment=...)`: each training step
    augments the batch once and gives the same tensor to the teacher and
    to the student. A `Mixup` layer, if any, must come last; its
    coefficient mixes the labels of the supervised loss too.

    Args:
        layers: A list of augmentation layers (`RandomShift`,
            `RandomFlip`, `Mixup`, or any Keras layer that takes
            `training`).
        **kwargs: Passed on to `keras.layers.Layer`.

    Raises:
        ValueError: If `layers` is empty or a `Mixup` is not last.

    Example:

    ```python
    augment = keras_distill.augment.ConsistentAugment(
        [
            keras_distill.augment.RandomShift(2, seed=0),
            keras_distill.augment.Mixup(0.2, seed=1),
        ]
    )
    distiller = keras_distill.Distiller(
        teacher, student, "kd", student_loss_weight=0.0, augment=augment
    )
    ```
    """

    def __init__(self, layers, **kwargs):
        super().__init__(**kwargs)
        if isinstance(layers, keras.layers.Layer):
            layers = [layers]
        if not isinstance(layers, (list, tuple)) or not layers:
            raise ValueError(
                "Invalid value for argument `layers`. Expected a non-empty "
                f"list of Keras layers. Received: layers={layers!r}"
            )
        layers = [
            keras.saving.deserialize_keras_object(x)
            if isinstance(x, dict)
            else x
            for x in layers
        ]
        if not all(isinstance(x, keras.layers.Layer) for x in layers):
            raise ValueError(
                "Invalid value for argument `layers`. Expected Keras layers. "
                f"Received: {[type(x).__name__ for x in layers]}"
            )
        if any(isinstance(x, Mixup) for x in layers[:-1]):
            raise ValueError(
                "Invalid value for argument `layers`. Expected `Mixup` last "
                "(it mixes the labels too). Received: "
                f"{[type(x).__name__ for x in layers]}"
            )
        self.augment_layers = list(layers)

    @property
    def mixup(self):
        """The final `Mixup` layer, or None."""
        last = self.augment_layers[-1]
        return last if isinstance(last, Mixup) else None

    def augment(self, x):
        """Augments one training batch.

        Args:
            x: The batch's inputs.

        Returns:
            `(x, perm, lam)`: the augmented inputs, and the permutation and
            coefficient of the mixup (`None, None` without one).
        """
        for layer in self.augment_layers:
            if isinstance(layer, Mixup):
                return layer.mix(x)
            x = layer(x, training=True)
        return x, None, None

    def call(self, x, training=None):
        if not training:
            return x
        return self.augment(x)[0]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["layers"] = [
            keras.saving.serialize_keras_object(x) for x in self.augment_layers
        ]
        return config


def check_augment(augment):
    """`None`, or the augmentation as a `ConsistentAugment`."""
    if augment is None or isinstance(augment, ConsistentAugment):
        return augment
    if isinstance(augment, (keras.layers.Layer, list, tuple)):
        return ConsistentAugment(augment)
    raise ValueError(
        "Invalid value for argument `augment`. Expected a "
        "`keras_distill.augment.ConsistentAugment` or a list of augmentation "
        f"layers. Received: augment={augment!r}"
    )
