"""The corpora of `keras-distill bench lm`, found offline.

- `"stdlib"` (the default): the source of the Python standard library,
  the `.py` files next to the `os` module (tests, IDLE, the turtle demo,
  2to3, `ensurepip`, `pydoc_data` and installed packages left out; about
  10 MB). Modules are sorted by name and every tenth (the 6th, 16th, ...)
  is for validation: the split is fixed by the names, not drawn.
- `"docs"`: the English documentation every Python ships with
  (`pydoc_data.topics`, 79 documents, every tenth for validation), small
  enough for the `--quick` run of the tests.

A WordPiece vocabulary (`keras_hub.tokenizers`, the `hub` extra) is
trained on the training split and the text is cut into windows.
"""

import os

import numpy as np

from keras_distill._utils import optional_import

CORPORA = ("stdlib", "docs")
# Folders of the standard library that are not its modules' source.
SKIPPED = frozenset(
    {
        "__pycache__",
        "ensurepip",
        "idlelib",
        "lib2to3",
        "pydoc_data",
        "site-packages",
        "dist-packages",
        "test",
        "tests",
        "turtledemo",
    }
)


def stdlib_modules(root=None):
    """The standard library's source files, as paths relative to `root`
    (default: the folder of the `os` module), sorted."""
    root = root or os.path.dirname(os.__file__)
    found = []
    for folder, subfolders, names in os.walk(root):
        relative = os.path.relpath(folder, root)
        parts = [] if relative == "." else relative.split(os.sep)
        if SKIPPED & set(parts) or (parts and parts[0].startswith("config-")):
            subfolders[:] = []
            continue
        found += [
            os.path.join(*parts, n) for n in names if n.endswith(".py")
        ]
    return sorted(found)


def split(names):
    """`(training names, validation names)`: every tenth of the sorted
    names (the 6th, 16th, ...) is for validation."""
    names = sorted(names)
    train = [n for i, n in enumerate(names) if i % 10 != 5]
    validation = [n for i, n in enumerate(names) if i % 10 == 5]
    return train, validation


def corpus(name="stdlib"):
    """`(training texts, validation texts)` of a corpus of `CORPORA`."""
    if name == "docs":
        from pydoc_data.topics import topics

        train, validation = split(topics)
        return [topics[n] for n in train], [topics[n] for n in validation]
    root = os.path.dirname(os.__file__)
    modules = stdlib_modules(root)
    if not modules:
        raise RuntimeError(
            "Expected the source of the Python standard library next to the "
            f"os module, in {root!r}. Received: no .py files there (this "
            "Python ships compiled modules only). Use --corpus docs."
        )

    def read(relative):
        path = os.path.join(root, relative)
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()

    train, validation = split(modules)
    return [read(n) for n in train], [read(n) for n in validation]


def word_piece_tokenizer(texts, size):
    """A WordPiece tokenizer (`keras_hub`) trained on `texts`."""
    keras_hub = optional_import("keras_hub", "hub", "The LM benchmark")
    import tensorflow as tf

    vocabulary = keras_hub.tokenizers.compute_word_piece_vocabulary(
        tf.data.Dataset.from_tensor_slices(texts),
        vocabulary_size=size,
        lowercase=False,
        strip_accents=False,
        reserved_tokens=["[PAD]", "[UNK]"],
    )
    return keras_hub.tokenizers.WordPieceTokenizer(
        vocabulary=vocabulary, lowercase=False, strip_accents=False
    )


def windows(tokenizer, texts, window):
    """`(x, y)`: consecutive windows of the texts' tokens and the next
    token of each position (int32 `(n, window)`)."""
    stream = np.concatenate(
        [np.asarray(tokenizer(t)).astype("int32") for t in texts]
    )
    n = (len(stream) - 1) // window
    x = stream[: n * window].reshape(n, window)
    y = stream[1 : n * window + 1].reshape(n, window)
    return x, y
