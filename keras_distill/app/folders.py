"""Data folders: one subfolder per class, as Keras' directory loaders read.

The layout is the one `keras.utils.image_dataset_from_directory` and
`keras.utils.text_dataset_from_directory` read:

```
flowers/
    daisy/
        001.jpg
        002.png
    tulip/
        003.jpg
```

Each class is a subfolder (its files may sit in nested folders); the class
names are the subfolders' names, in sorted order, and a file's label is its
class's index. A folder holds images (`.png`, `.jpg`, `.jpeg`, `.gif`,
`.bmp`) or text files (`.txt`), not both. Files and folders whose name
starts with `.` are ignored, and so are files of other types.

This module checks a folder without TensorFlow (NumPy only), so that the
`keras-distill` command can refuse a bad folder before TensorFlow loads;
`keras_distill.app.datasets.load` streams the files with `tf.data`.
"""

import dataclasses
import os

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp")
TEXT_EXTENSIONS = (".txt",)

# The first bytes of each image format that TensorFlow decodes.
_SIGNATURES = (
    b"\x89PNG\r\n\x1a\n",  # PNG
    b"\xff\xd8\xff",  # JPEG
    b"GIF87a",  # GIF
    b"GIF89a",
    b"BM",  # BMP
)
_LAYOUT = (
    "a folder with one subfolder per class (for example `data/cat/1.png`, "
    "`data/dog/2.png`)"
)


@dataclasses.dataclass
class Folder:
    """The files of a data folder and their labels.

    Attributes:
        path: The folder's path, as given.
        kind: `"image"` or `"text"`.
        classes: The class names (the class subfolders' names), sorted.
        files: The paths of the files, class by class, each class's in
            sorted order.
        labels: int32 array, the index in `classes` of each file's class.
    """

    path: str
    kind: str
    classes: list
    files: list
    labels: np.ndarray

    def __len__(self):
        return len(self.files)

    @property
    def num_classes(self):
        """The number of classes."""
        return len(self.classes)

    def subset(self, indices):
        """The folder restricted to some of its files.

        Args:
            indices: Integer positions in `files`.

        Returns:
            A `Folder` with the same path, kind and classes, holding the
            files at `indices` (in that order) and their labels.
        """
        indices = np.asarray(indices, dtype="int64")
        return Folder(
            path=self.path,
            kind=self.kind,
            classes=list(self.classes),
            files=[self.files[i] for i in indices],
            labels=self.labels[indices],
        )


def scan(path, name="dataset"):
    """Lists a data folder's classes and files, and checks every file.

    Every image file must start with a PNG, JPEG, GIF or BMP signature, and
    every text file must be valid UTF-8; only those first bytes of an image
    are read here.

    Args:
        path: A folder with one subfolder per class.
        name: What the folder is called in error messages (the
            configuration's field, `"dataset"` or `"test_dataset"`).

    Returns:
        A `keras_distill.app.folders.Folder`.

    Raises:
        ValueError: If `path` is not a directory, has no class subfolders
            or only one, if a class folder holds no image or text file,
            if it mixes images and text files, or if a file cannot be read
            (the message names the file).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(
            f"Invalid value for `{name}`. Expected {_LAYOUT}. Received: "
            f"{path!r}"
        )
    path = os.fspath(path)
    if not os.path.isdir(path):
        what = "a file" if os.path.exists(path) else "no such directory"
        raise ValueError(
            f"Invalid value for `{name}`. Expected {_LAYOUT}. Received: "
            f"{path!r} ({what})."
        )
    classes = sorted(
        entry.name
        for entry in os.scandir(path)
        if entry.is_dir() and not entry.name.startswith(".")
    )
    if not classes:
        loose = [
            entry.name
            for entry in os.scandir(path)
            if entry.is_file() and not entry.name.startswith(".")
        ]
        found = (
            f"files but no subfolder (for example {sorted(loose)[0]!r})"
            if loose
            else "no subfolder"
        )
        raise ValueError(
            f"Invalid value for `{name}`. Expected {_LAYOUT}. Received: "
            f"{path!r}, which holds {found}. Move each class's files into "
            "a subfolder named after the class."
        )
    if len(classes) < 2:
        raise ValueError(
            f"Invalid value for `{name}`. Expected at least two class "
            f"subfolders in {path!r}. Received: one, {classes[0]!r}. Add a "
            "subfolder for each other class."
        )
    images, texts = {}, {}
    for label in classes:
        images[label], texts[label] = _class_files(os.path.join(path, label))
    n_images = sum(len(f) for f in images.values())
    n_texts = sum(len(f) for f in texts.values())
    if n_images and n_texts:
        image = next(f[0] for f in images.values() if f)
        text = next(f[0] for f in texts.values() if f)
        raise ValueError(
            f"Invalid value for `{name}`. Expected images "
            f"({', '.join(IMAGE_EXTENSIONS)}) or text files (.txt) in "
            f"{path!r}, not both. Received: {n_images} images (for example "
            f"{image!r}) and {n_texts} text files (for example {text!r}). "
            "Keep one kind, or move the other to another folder."
        )
    kind = "text" if n_texts else "image"
    found = texts if n_texts else images
    for label in classes:
        if not found[label]:
            expected = (
                "text files (.txt)"
                if kind == "text"
                else f"image files ({', '.join(IMAGE_EXTENSIONS)})"
            )
            raise ValueError(
                f"Invalid value for `{name}`. Expected {expected} in every "
                f"class folder. Received: none in "
                f"{os.path.join(path, label)!r}. Add files to it, or remove "
                "the folder."
            )
    files, labels = [], []
    for index, label in enumerate(classes):
        for file in found[label]:
            _check_file(file, kind, name)
        files += found[label]
        labels += [index] * len(found[label])
    return Folder(
        path=path,
        kind=kind,
        classes=classes,
        files=files,
        labels=np.asarray(labels, dtype="int32"),
    )


def split(folder, test_fraction=0.2, seed=0):
    """Splits a folder's files into train and test parts, class by class.

    Each class gives `round(test_fraction * n)` of its `n` files to the test
    part, but at least one to each part. The split depends on the seed
    alone: the same seed gives the same split.

    Args:
        folder: A `keras_distill.app.folders.Folder`.
        test_fraction: The share of each class that goes to the test part,
            in (0, 1).
        seed: A non-negative int.

    Returns:
        `(train_indices, test_indices)`: int64 arrays of positions in
        `folder.files`, each sorted.

    Raises:
        ValueError: For an invalid fraction or seed, or a class with a
            single file (it cannot be in both parts).
    """
    if (
        isinstance(test_fraction, bool)
        or not isinstance(test_fraction, (int, float))
        or not 0.0 < test_fraction < 1.0
    ):
        raise ValueError(
            "Invalid value for argument `test_fraction`. Expected a float "
            f"in (0, 1). Received: test_fraction={test_fraction!r}"
        )
    _check_seed(seed)
    counts = np.bincount(folder.labels, minlength=len(folder.classes))
    lonely = [c for c, n in zip(folder.classes, counts) if n < 2]
    if lonely:
        raise ValueError(
            f"Invalid value for `dataset`. Expected at least two files in "
            f"each class of {folder.path!r}, one to train on and one to "
            f"test on. Received: a single file in {lonely}. Add files to "
            "these classes, or give a separate test folder."
        )
    return stratified_indices(folder.labels, test_fraction, seed)


def stratified_indices(labels, fraction, seed):
    """Draws a share of each class, keeping every class on both sides.

    Each class of `n >= 2` items gives `round(fraction * n)` of them, at
    least one and at most `n - 1`, to the held-out part; a class with a
    single item stays in the kept part.

    Args:
        labels: Integer class labels.
        fraction: The share to hold out, in [0, 1).
        seed: A non-negative int; the same seed gives the same split.

    Returns:
        `(kept, held)`: int64 arrays of positions in `labels`, each sorted.

    Raises:
        ValueError: For a seed that is not a non-negative int.
    """
    _check_seed(seed)
    labels = np.asarray(labels)
    rng = np.random.default_rng(int(seed))
    kept, held = [], []
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        n_held = 0
        if fraction and len(idx) >= 2:
            n_held = min(max(1, int(round(len(idx) * fraction))), len(idx) - 1)
        held.append(idx[:n_held])
        kept.append(idx[n_held:])
    empty = np.zeros(0, dtype="int64")
    return (
        np.sort(np.concatenate([empty, *kept])).astype("int64"),
        np.sort(np.concatenate([empty, *held])).astype("int64"),
    )


def check(train_path, test_path=None):
    """Scans a training folder and, if given, a separate test folder.

    Args:
        train_path: The training folder (one subfolder per class).
        test_path: A test folder with the same class subfolders, or None
            (the test part is then split from the training folder, see
            `split`).

    Returns:
        `(train, test)`: the scanned `Folder`s, `test` None when
        `test_path` is None.

    Raises:
        ValueError: For a bad folder (see `scan`), or a test folder whose
            classes or kind differ from the training folder's.
    """
    train = scan(train_path)
    if test_path is None:
        return train, None
    test = scan(test_path, "test_dataset")
    if test.classes != train.classes:
        only_train = sorted(set(train.classes) - set(test.classes))
        only_test = sorted(set(test.classes) - set(train.classes))
        raise ValueError(
            "Invalid value for `test_dataset`. Expected the same class "
            f"subfolders as the training folder {train.path!r}. Received: "
            f"{test.path!r}, missing {only_train} and with {only_test} "
            "that the training folder lacks. Give both folders the same "
            "class subfolders."
        )
    if test.kind != train.kind:
        raise ValueError(
            "Invalid value for `test_dataset`. Expected "
            f"{train.kind} files like the training folder {train.path!r}. "
            f"Received: {test.path!r}, with {test.kind} files."
        )
    return train, test


def _check_seed(seed):
    if (
        isinstance(seed, bool)
        or not isinstance(seed, (int, np.integer))
        or seed < 0
    ):
        raise ValueError(
            "Invalid value for argument `seed`. Expected a non-negative "
            f"int. Received: seed={seed!r}"
        )


def _class_files(directory):
    """The image and text files under a class folder, each list sorted."""
    images, texts = [], []
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            lower = name.lower()
            if lower.endswith(IMAGE_EXTENSIONS):
                images.append(os.path.join(root, name))
            elif lower.endswith(TEXT_EXTENSIONS):
                texts.append(os.path.join(root, name))
    return images, texts


def _check_file(file, kind, name):
    """Raises a ValueError naming `file` if it cannot be read as `kind`."""
    try:
        with open(file, "rb") as f:
            data = f.read(8) if kind == "image" else f.read()
    except OSError as error:
        raise ValueError(
            f"Invalid value for `{name}`. Expected readable files. "
            f"Received: {file!r}, which cannot be opened "
            f"({error.strerror or error}). Fix its permissions or remove it."
        ) from None
    if kind == "image":
        if not data.startswith(_SIGNATURES):
            raise ValueError(
                f"Invalid value for `{name}`. Expected PNG, JPEG, GIF or "
                f"BMP images. Received: {file!r}, which is not one (its "
                f"first bytes are {data!r}). Convert it or remove it."
            )
        return
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"Invalid value for `{name}`. Expected UTF-8 text files. "
            f"Received: {file!r}, which is not valid UTF-8 ({error.reason} "
            f"at byte {error.start}). Re-save it as UTF-8 or remove it."
        ) from None
