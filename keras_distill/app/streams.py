"""A data folder streamed from disk: its `tf.data` pipelines (file paths
and labels in memory, each image or text file read as its batch needs
it), and `take_arrays`, a bounded NumPy subset of any pipeline.

The folder itself is scanned and checked by `keras_distill.app.folders`
(no TensorFlow); `keras_distill.app.datasets.load` calls `load_folder`
for a directory source.
"""

import os

import numpy as np

from keras_distill.app import folders
from keras_distill.pipelines import shuffled_positions

TEST_FRACTION = 0.2  # The test share of a folder without a test folder.


def take_arrays(dataset, limit):
    """The first examples of a batched `(x, y)` dataset, as NumPy arrays.

    Reads batches only until `limit` examples are in hand, so that an
    evaluation subset of a streamed folder has a bounded size.

    Args:
        dataset: A `tf.data.Dataset` of `(x, y)` batches (a `Data`
            pipeline).
        limit: The most examples to take, a positive int.

    Returns:
        `(x, y)`: NumPy arrays of at most `limit` examples (fewer when the
        dataset has fewer); `x` holds bytes objects for text.

    Raises:
        ValueError: For a `limit` that is not a positive int.

    Example:

    >>> data = keras_distill.app.datasets.load("digits", batch_size=32)
    >>> x, y = keras_distill.app.datasets.take_arrays(data.test, 100)
    >>> x.shape, y.shape
    ((100, 8, 8, 1), (100,))
    """
    if (
        isinstance(limit, bool)
        or not isinstance(limit, (int, np.integer))
        or limit <= 0
    ):
        raise ValueError(
            "Invalid value for argument `limit`. Expected a positive int. "
            f"Received: limit={limit!r}"
        )
    xs, ys, count = [], [], 0
    for x, y in dataset:
        xs.append(x.numpy()[: limit - count])
        ys.append(y.numpy()[: limit - count])
        count += len(xs[-1])
        if count >= limit:
            break
    if not xs:
        x_spec, y_spec = dataset.element_spec
        return (
            _empty(x_spec),
            _empty(y_spec),
        )
    return np.concatenate(xs), np.concatenate(ys)


def is_folder(source):
    """Whether `source` names a data folder (not a bundled or TFDS name)."""
    if not isinstance(source, (str, os.PathLike)):
        return False
    source = os.fspath(source)
    if source in ("mnist5k", "digits") or str(source).startswith("tfds:"):
        return False
    return os.path.isdir(source)


def load_folder(
    source,
    *,
    test_source,
    batch_size,
    validation_split,
    seed,
    image_size,
    channels,
):
    """`keras_distill.app.datasets.load` for a data folder: pipelines that
    read the files, as the keyword arguments of a `Data` (its `arrays`
    None). The validation split is checked by the caller."""
    _check_image_options(image_size, channels)
    if test_source is not None and not isinstance(
        test_source, (str, os.PathLike)
    ):
        raise ValueError(
            "Invalid value for argument `test_source`. Expected a folder "
            f"path or None. Received: test_source={test_source!r}"
        )
    train, test = folders.check(
        source, None if test_source is None else os.fspath(test_source)
    )
    if test is None:
        train_indices, test_indices = folders.split(train, TEST_FRACTION, seed)
        train, test = train.subset(train_indices), train.subset(test_indices)
    kept, held = folders.stratified_indices(
        train.labels, validation_split, seed
    )
    validation = None
    if len(held):
        train, validation = train.subset(kept), train.subset(held)
    if train.kind == "image":
        image_size, channels = _image_options(
            train.files[0], image_size, channels
        )
        read = _image_reader(image_size, channels)
        input_shape = (*image_size, channels)
    else:
        for name, value in (("image_size", image_size), ("channels", channels)):
            if value is not None:
                raise ValueError(
                    f"Invalid value for argument `{name}`. Expected None: "
                    f"it applies to image folders only, and {source!r} "
                    f"holds text files. Received: {name}={value!r}"
                )
        read = _read_text
        input_shape = ()
    return dict(
        train=_stream(train, read, batch_size, shuffle=True, seed=seed),
        validation=(
            _stream(validation, read, batch_size)
            if validation is not None
            else None
        ),
        test=_stream(test, read, batch_size),
        input_shape=input_shape,
        num_classes=train.num_classes,
        arrays=None,
        class_names=list(train.classes),
        kind=train.kind,
    )


def _check_image_options(image_size, channels):
    if image_size is not None:
        ok = isinstance(image_size, (tuple, list)) and len(image_size) == 2
        ok = ok and all(
            isinstance(v, (int, np.integer))
            and not isinstance(v, bool)
            and v > 0
            for v in image_size
        )
        if not ok:
            raise ValueError(
                "Invalid value for argument `image_size`. Expected "
                "`(height, width)`, two positive ints, or None. Received: "
                f"image_size={image_size!r}"
            )
    if channels is not None and (
        isinstance(channels, bool) or channels not in (1, 3)
    ):
        raise ValueError(
            "Invalid value for argument `channels`. Expected 1 (grey), 3 "
            f"(RGB) or None. Received: channels={channels!r}"
        )


def _image_options(file, image_size, channels):
    """`image_size` and `channels`, from the image `file` where None."""
    if image_size is None or channels is None:
        import tensorflow as tf

        try:
            image = tf.io.decode_image(
                tf.io.read_file(file), expand_animations=False
            )
        except tf.errors.OpError as error:
            raise ValueError(
                "Invalid value for `dataset`. Expected readable images. "
                f"Received: {file!r}, which cannot be decoded "
                f"({error.message.strip()}). Convert it or remove it."
            ) from None
        height, width, depth = image.shape
        if image_size is None:
            image_size = (height, width)
        if channels is None:
            channels = 1 if depth in (1, 2) else 3
    return tuple(int(v) for v in image_size), int(channels)


def _image_reader(image_size, channels):
    """A function of a file path that returns the image, float32 in
    [0, 1], resized to `image_size`, with `channels` channels."""
    import tensorflow as tf

    def read(path):
        image = tf.io.decode_image(
            tf.io.read_file(path), dtype=tf.float32, expand_animations=False
        )
        depth = tf.shape(image)[-1]  # 1 (grey), 2 (+ alpha), 3, 4 (+ alpha)
        if channels == 3:
            image = tf.cond(
                depth >= 3,
                lambda: image[..., :3],
                lambda: tf.image.grayscale_to_rgb(image[..., :1]),
            )
        else:
            image = tf.cond(
                depth >= 3,
                lambda: tf.image.rgb_to_grayscale(image[..., :3]),
                lambda: image[..., :1],
            )
        image = tf.image.resize(image, image_size)
        image = tf.clip_by_value(image, 0.0, 1.0)
        image.set_shape((*image_size, channels))
        return image

    return read


def _read_text(path):
    import tensorflow as tf

    return tf.io.read_file(path)


def _stream(folder, read, batch_size, shuffle=False, seed=0):
    """A batched, prefetched dataset of `(read(file), label)`.

    With `shuffle`, each pass is in a new order that depends on `seed`
    alone, the order `keras_distill.pipelines.pipeline` serves arrays of
    the same length in.
    """
    import tensorflow as tf

    files = tf.constant(folder.files)
    labels = tf.constant(folder.labels)

    def example(i):
        return read(tf.gather(files, i)), tf.gather(labels, i)

    n = len(folder)
    if shuffle:
        positions = shuffled_positions(n, batch_size, seed).unbatch()
    else:
        positions = tf.data.Dataset.range(n)
    ds = positions.map(example, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size)
    if shuffle:  # `unbatch` hides it
        steps = -(-n // batch_size)
        ds = ds.apply(tf.data.experimental.assert_cardinality(steps))
    return ds.prefetch(tf.data.AUTOTUNE)


def _empty(spec):
    """An empty NumPy array for a batched `tf.TensorSpec`."""
    shape = tuple(0 if d is None else d for d in spec.shape[1:])
    return np.zeros((0, *shape), dtype=spec.dtype.as_numpy_dtype)
