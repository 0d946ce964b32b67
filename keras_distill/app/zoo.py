"""Reference teacher and student models for image classification, by name.

Every builder takes the input shape and the class count and returns an
uncompiled Functional `keras.Model` that outputs logits.

| name | what | params (28×28×1, 10 classes) |
| --- | --- | --- |
| `mlp-large` | Hinton et al.'s 1200-1200 MLP, dropout | 2.4 M |
| `mlp-small` | an 800-800 MLP, no regularisation | 1.3 M |
| `mlp-compact` | a 300-300 MLP, no regularisation | 329 k |
| `mlp-tiny` | a 64-unit MLP | 51 k |
| `cnn-large` | the keras.io example's teacher CNN | 1.4 M |
| `cnn-medium` | a LeNet-style CNN, dropout | 421 k |
| `cnn-small` | the keras.io example's student CNN | 20 k |
| `resnet-small` | a small residual CNN with BatchNorm | 78 k |
"""

import keras

from keras_distill._validation import check_choice
from keras_distill.app.config import MODELS

_BUILDERS = {}


def _register(name):
    if name not in MODELS:  # the command lists them without TensorFlow
        raise ValueError(f"Add {name!r} to keras_distill.app.config.MODELS")

    def decorator(fn):
        _BUILDERS[name] = fn
        return fn

    return decorator


def names():
    """The sorted list of model names known to `build`."""
    return sorted(_BUILDERS)


def build(name, input_shape, num_classes, *, seed=None, **kwargs):
    """Builds a named reference model.

    Args:
        name: One of `keras_distill.app.zoo.names()`.
        input_shape: Shape of one example, e.g. `(28, 28, 1)`. The CNNs need
            an image shape `(height, width, channels)`; the MLPs take any.
        num_classes: Number of output logits.
        seed: Optional seed for the weight initialisers.
        **kwargs: Options of that builder (`dropout` for the MLPs).

    Returns:
        An uncompiled Functional `keras.Model` named after `name`.

    Raises:
        ValueError: For an unknown name, a non-image shape given to a CNN,
            or a class count below 2.

    Example:

    >>> model = keras_distill.app.zoo.build("cnn-small", (28, 28, 1), 10)
    >>> model.count_params()
    20490
    """
    check_choice("name", name, names())
    input_shape = tuple(int(d) for d in input_shape)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        raise ValueError(
            "Invalid value for argument `num_classes`. Expected an int >= 2. "
            f"Received: num_classes={num_classes!r}"
        )
    if num_classes < 2:
        raise ValueError(
            "Invalid value for argument `num_classes`. Expected an int >= 2. "
            f"Received: num_classes={num_classes!r}"
        )
    return _BUILDERS[name](input_shape, num_classes, seed=seed, **kwargs)


def teacher(name="cnn-large", input_shape=(28, 28, 1), num_classes=10, **kw):
    """Builds a teacher; same as `build`, with a teacher's default name."""
    return build(name, input_shape, num_classes, **kw)


def student(name="cnn-small", input_shape=(28, 28, 1), num_classes=10, **kw):
    """Builds a student; same as `build`, with a student's default name."""
    return build(name, input_shape, num_classes, **kw)


def _init(seed, offset):
    return keras.initializers.GlorotUniform(
        seed=None if seed is None else seed + offset
    )


def _mlp(widths, input_shape, num_classes, seed, dropout, name):
    inputs = keras.Input(input_shape, name="inputs")
    h = keras.layers.Flatten(name="flatten")(inputs)
    for i, width in enumerate(widths):
        h = keras.layers.Dense(
            width,
            activation="relu",
            kernel_initializer=_init(seed, i),
            name=f"dense_{i + 1}",
        )(h)
        if dropout:
            h = keras.layers.Dropout(dropout, name=f"dropout_{i + 1}")(h)
    outputs = keras.layers.Dense(
        num_classes, kernel_initializer=_init(seed, 99), name="logits"
    )(h)
    return keras.Model(inputs, outputs, name=name)


@_register("mlp-large")
def mlp_large(input_shape, num_classes, seed=None, dropout=0.5):
    """Hinton et al.'s 1200-1200 ReLU MLP with dropout (a teacher)."""
    return _mlp(
        (1200, 1200), input_shape, num_classes, seed, dropout, "mlp_large"
    )


@_register("mlp-small")
def mlp_small(input_shape, num_classes, seed=None, dropout=0.0):
    """An 800-800 ReLU MLP without regularisation (a student)."""
    return _mlp(
        (800, 800), input_shape, num_classes, seed, dropout, "mlp_small"
    )


@_register("mlp-compact")
def mlp_compact(input_shape, num_classes, seed=None, dropout=0.0):
    """A 300-300 ReLU MLP without regularisation (a compact student)."""
    return _mlp(
        (300, 300), input_shape, num_classes, seed, dropout, "mlp_compact"
    )


@_register("mlp-tiny")
def mlp_tiny(input_shape, num_classes, seed=None, dropout=0.0):
    """A one-hidden-layer, 64-unit MLP (a very small student)."""
    return _mlp((64,), input_shape, num_classes, seed, dropout, "mlp_tiny")


def _image_input(input_shape, name):
    if len(input_shape) != 3:
        raise ValueError(
            f"Invalid input shape for `{name}`. Expected an image shape "
            f"(height, width, channels). Received: input_shape={input_shape}"
        )
    return keras.Input(input_shape, name="inputs")


def _keras_io_cnn(filters, input_shape, num_classes, seed, name):
    """The keras.io Distiller example's CNN shape, with two conv widths."""
    inputs = _image_input(input_shape, name)
    h = inputs
    for i, width in enumerate(filters):
        h = keras.layers.Conv2D(
            width,
            3,
            strides=2,
            padding="same",
            kernel_initializer=_init(seed, i),
            name=f"conv_{i + 1}",
        )(h)
        if i == 0:
            h = keras.layers.LeakyReLU(negative_slope=0.2, name="act_1")(h)
            h = keras.layers.MaxPooling2D(
                2, strides=1, padding="same", name="pool"
            )(h)
    h = keras.layers.Flatten(name="flatten")(h)
    outputs = keras.layers.Dense(
        num_classes, kernel_initializer=_init(seed, 99), name="logits"
    )(h)
    return keras.Model(inputs, outputs, name=name.replace("-", "_"))


@_register("cnn-large")
def cnn_large(input_shape, num_classes, seed=None):
    """The keras.io Distiller example's teacher CNN (256 and 512 filters)."""
    return _keras_io_cnn(
        (256, 512), input_shape, num_classes, seed, "cnn-large"
    )


@_register("cnn-medium")
def cnn_medium(input_shape, num_classes, seed=None, dropout=0.3):
    """A LeNet-style CNN (32 and 64 filters, a 128-unit layer): a teacher
    that trains in seconds per epoch on a CPU."""
    inputs = _image_input(input_shape, "cnn-medium")
    h = inputs
    for i, filters in enumerate((32, 64)):
        h = keras.layers.Conv2D(
            filters,
            3,
            padding="same",
            activation="relu",
            kernel_initializer=_init(seed, i),
            name=f"conv_{i + 1}",
        )(h)
        h = keras.layers.MaxPooling2D(2, padding="same", name=f"pool_{i + 1}")(
            h
        )
    h = keras.layers.Flatten(name="flatten")(h)
    if dropout:
        h = keras.layers.Dropout(dropout, name="dropout")(h)
    h = keras.layers.Dense(
        128, activation="relu", kernel_initializer=_init(seed, 2), name="dense"
    )(h)
    outputs = keras.layers.Dense(
        num_classes, kernel_initializer=_init(seed, 99), name="logits"
    )(h)
    return keras.Model(inputs, outputs, name="cnn_medium")


@_register("cnn-small")
def cnn_small(input_shape, num_classes, seed=None):
    """The keras.io Distiller example's student CNN (16 and 32 filters)."""
    return _keras_io_cnn((16, 32), input_shape, num_classes, seed, "cnn-small")


@_register("resnet-small")
def resnet_small(input_shape, num_classes, seed=None):
    """A small residual CNN: 3 stages (16, 32, 64 filters) with BatchNorm."""
    inputs = _image_input(input_shape, "resnet-small")
    counter = iter(range(100))

    def conv(x, filters, strides=1, kernel=3):
        i = next(counter)
        return keras.layers.Conv2D(
            filters,
            kernel,
            strides=strides,
            padding="same",
            use_bias=False,
            kernel_initializer=_init(seed, i),
            name=f"conv_{i}",
        )(x)

    def bn_relu(x, relu=True):
        x = keras.layers.BatchNormalization()(x)
        return keras.layers.ReLU()(x) if relu else x

    h = bn_relu(conv(inputs, 16))
    for stage, filters in enumerate((16, 32, 64)):
        strides = 1 if stage == 0 else 2
        shortcut = h
        y = bn_relu(conv(h, filters, strides))
        y = bn_relu(conv(y, filters), relu=False)
        if strides != 1 or shortcut.shape[-1] != filters:
            shortcut = bn_relu(conv(shortcut, filters, strides, 1), relu=False)
        h = keras.layers.ReLU(name=f"block_{stage + 1}")(
            keras.layers.Add()([y, shortcut])
        )
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    outputs = keras.layers.Dense(
        num_classes, kernel_initializer=_init(seed, 99), name="logits"
    )(h)
    return keras.Model(inputs, outputs, name="resnet_small")
