"""Data folders (one subfolder per class) as `datasets.load` sources."""

import os
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from keras_distill.app import datasets as data
from keras_distill.app import folders

# -- writing tiny folders ---------------------------------------------------


def _pixels(value, shape):
    return np.full(shape, value, dtype=np.uint8)


def _write_png(path, pixels):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tf.io.write_file(path, tf.io.encode_png(pixels))


def _write_jpeg(path, pixels):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tf.io.write_file(path, tf.io.encode_jpeg(pixels, quality=100))


def _write_bmp(path, pixels):
    """A 24-bit uncompressed BMP (TensorFlow encodes no BMP)."""
    height, width, _ = pixels.shape
    row = (3 * width + 3) // 4 * 4
    body = b"".join(
        pixels[y, :, ::-1].tobytes().ljust(row, b"\0")
        for y in range(height - 1, -1, -1)  # bottom-up, BGR
    )
    header = struct.pack("<2sIHHI", b"BM", 54 + len(body), 0, 0, 54)
    info = struct.pack(
        "<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(body), 0, 0, 0, 0
    )
    with open(path, "wb") as f:
        f.write(header + info + body)


def _write_text(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _image_folder(root, counts, shape=(6, 8, 3)):
    """Class `c` holds `counts[c]` uniform PNG images, each of its own
    grey level (its code); returns `{code: label}`."""
    codes = {}
    for label, count in enumerate(counts):
        for index in range(count):
            code = 8 + 9 * len(codes)  # at most 27 files
            path = str(root / f"class_{label}" / f"{index:02d}.png")
            _write_png(path, _pixels(code, shape))
            codes[code] = label
    return codes


def _text_folder(root, counts):
    for label, count in enumerate(counts):
        for index in range(count):
            _write_text(
                str(root / f"class_{label}" / f"{index:02d}.txt"),
                f"class {label} file {index} é✓",
            )


def _image_examples(dataset):
    """`(code, label)` of every example, the code read from the pixels."""
    found = []
    for x, y in dataset:
        assert x.dtype == tf.float32 and y.dtype == tf.int32
        x = x.numpy()
        assert 0.0 <= x.min() and x.max() <= 1.0
        for image, label in zip(x, y.numpy()):
            code = int(round(float(image.mean()) * 255))
            assert np.allclose(image * 255, code, atol=0.6)  # uniform
            found.append((code, int(label)))
    return found


def _text_examples(dataset):
    found = []
    for x, y in dataset:
        assert x.dtype == tf.string and x.shape.rank == 1
        assert y.dtype == tf.int32
        for text, label in zip(x.numpy(), y.numpy()):
            found.append((text.decode("utf-8"), int(label)))
    return found


# -- loading ----------------------------------------------------------------


def test_image_folder_loads_streamed_with_the_labels_of_its_files(tmp_path):
    codes = _image_folder(tmp_path / "data", [5, 5, 5])
    d = data.load(str(tmp_path / "data"), batch_size=4, seed=0)
    assert d.kind == "image" and d.arrays is None
    assert d.input_shape == (6, 8, 3) and d.num_classes == 3
    assert d.class_names == ["class_0", "class_1", "class_2"]
    assert d.validation is None
    train = _image_examples(d.train)
    test = _image_examples(d.test)
    for code, label in train + test:
        assert codes[code] == label
    # Every file once, 20% of each class in the test part.
    assert sorted(c for c, _ in train + test) == sorted(codes)
    assert sorted(label for _, label in test) == [0, 1, 2]
    assert d.train.cardinality() == 3  # 12 examples in batches of 4
    x, _ = next(iter(d.train))
    assert x.shape == (4, 6, 8, 3)


def test_grey_jpeg_bmp_rgba_and_resizing(tmp_path):
    root = tmp_path / "data"
    _image_folder(root, [2, 2], shape=(5, 7, 1))
    d = data.load(str(root), batch_size=8)
    assert d.input_shape == (5, 7, 1)  # from the first (grey) image
    x, _ = next(iter(d.train))
    assert x.shape == (2, 5, 7, 1)
    d = data.load(str(root), batch_size=8, channels=3, image_size=(3, 4))
    assert d.input_shape == (3, 4, 3)
    x, _ = next(iter(d.test))
    assert x.shape == (2, 3, 4, 3) and x.dtype == tf.float32

    # JPEG, BMP and an RGBA PNG side by side: three channels.
    other = tmp_path / "other"
    _write_jpeg(str(other / "a" / "1.JPG"), _pixels(200, (4, 4, 3)))
    _write_jpeg(str(other / "a" / "2.jpeg"), _pixels(200, (4, 4, 3)))
    os.makedirs(other / "b")
    _write_bmp(str(other / "b" / "1.bmp"), _pixels(40, (4, 4, 3)))
    _write_png(str(other / "b" / "2.png"), _pixels(40, (4, 4, 4)))
    d = data.load(str(other), batch_size=8, channels=1)
    assert d.input_shape == (4, 4, 1)
    d = data.load(str(other), batch_size=8)
    assert d.input_shape == (4, 4, 3)
    found = _image_examples(d.train) + _image_examples(d.test)
    assert sorted(found) == [(40, 1), (40, 1), (200, 0), (200, 0)]


def test_text_folder_loads_one_string_per_file(tmp_path):
    _text_folder(tmp_path / "data", [4, 3])
    d = data.load(str(tmp_path / "data"), batch_size=2)
    assert d.kind == "text" and d.input_shape == () and d.num_classes == 2
    assert d.arrays is None and d.class_names == ["class_0", "class_1"]
    found = _text_examples(d.train) + _text_examples(d.test)
    assert len(found) == 7
    for text, label in found:
        assert text.startswith(f"class {label} file ") and text.endswith("✓")


def test_hidden_and_other_files_are_ignored(tmp_path):
    root = tmp_path / "data"
    _image_folder(root, [2, 2])
    (root / ".cache").mkdir()
    (root / ".cache" / "junk.png").write_bytes(b"junk")
    (root / "class_0" / ".hidden.png").write_bytes(b"junk")
    (root / "class_0" / "notes.csv").write_text("a,b")
    (root / "README.md").write_text("loose files beside classes")
    folder = folders.scan(str(root))
    assert folder.classes == ["class_0", "class_1"]
    assert len(folder) == 4 and folder.kind == "image"
    assert folder.labels.dtype == np.int32
    assert folder.labels.tolist() == [0, 0, 1, 1]
    # Nested folders inside a class belong to it.
    _write_png(str(root / "class_1" / "more" / "x.png"), _pixels(9, (2, 2, 3)))
    folder = folders.scan(str(root))
    assert folder.labels.tolist() == [0, 0, 1, 1, 1]
    assert folder.files[-1].endswith(os.path.join("more", "x.png"))


# -- splits -----------------------------------------------------------------


def test_split_is_stratified_and_reproducible_from_the_seed(tmp_path):
    _text_folder(tmp_path / "data", [10, 5, 2])
    folder = folders.scan(str(tmp_path / "data"))
    train, test = folders.split(folder, 0.2, seed=0)
    again_train, again_test = folders.split(folder, 0.2, seed=0)
    np.testing.assert_array_equal(train, again_train)
    np.testing.assert_array_equal(test, again_test)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(17))
    assert np.bincount(folder.labels[test]).tolist() == [2, 1, 1]
    assert np.bincount(folder.labels[train]).tolist() == [8, 4, 1]
    others = [folders.split(folder, 0.2, seed=s)[1] for s in range(1, 5)]
    assert any(not np.array_equal(test, o) for o in others)

    # load: the same seed serves the same split and the same batches.
    def batches(seed):
        d = data.load(str(tmp_path / "data"), batch_size=3, seed=seed)
        return _text_examples(d.train), _text_examples(d.test)

    first = batches(7)
    assert first == batches(7)
    assert first != batches(8)


def test_validation_slice_is_stratified_from_the_train_part(tmp_path):
    codes = _image_folder(tmp_path / "data", [10, 10, 5], shape=(2, 2, 3))
    d = data.load(
        str(tmp_path / "data"), batch_size=4, validation_split=0.25, seed=3
    )
    train = _image_examples(d.train)
    validation = _image_examples(d.validation)
    test = _image_examples(d.test)
    assert sorted(c for c, _ in train + validation + test) == sorted(codes)
    assert np.bincount([y for _, y in test]).tolist() == [2, 2, 1]
    assert np.bincount([y for _, y in validation]).tolist() == [2, 2, 1]
    assert np.bincount([y for _, y in train]).tolist() == [6, 6, 3]


def test_a_separate_test_folder(tmp_path):
    train_codes = _image_folder(tmp_path / "train", [3, 3])
    test_root = tmp_path / "test"
    for label in (0, 1):  # codes the training folder does not use
        _write_png(
            str(test_root / f"class_{label}" / "t.png"),
            _pixels(200 + label, (6, 8, 3)),
        )
    train, test = folders.check(str(tmp_path / "train"), str(test_root))
    assert len(train) == 6 and len(test) == 2
    assert folders.check(str(tmp_path / "train"))[1] is None
    d = data.load(str(tmp_path / "train"), test_source=str(test_root))
    assert sorted(_image_examples(d.test)) == [(200, 0), (201, 1)]
    found = _image_examples(d.train)
    assert sorted(c for c, _ in found) == sorted(train_codes)
    assert all(train_codes[c] == y for c, y in found)


def test_take_arrays(tmp_path):
    _text_folder(tmp_path / "data", [10, 10])
    d = data.load(str(tmp_path / "data"), batch_size=4, seed=1)
    x, y = data.take_arrays(d.train, 5)
    assert x.shape == (5,) and y.shape == (5,) and y.dtype == np.int32
    assert isinstance(x[0], bytes)
    x, y = data.take_arrays(d.test, 100)  # fewer than the limit
    assert len(x) == len(y) == 4
    digits = data.load("digits", batch_size=32)
    x, y = data.take_arrays(digits.test, 40)
    assert x.shape == (40, 8, 8, 1) and x.dtype == np.float32
    np.testing.assert_array_equal(y, digits.arrays.y_test[:40])
    x, y = data.take_arrays(digits.test.take(0), 3)
    assert x.shape == (0, 8, 8, 1) and y.shape == (0,)
    with pytest.raises(ValueError, match="argument `limit`"):
        data.take_arrays(digits.test, 0)


def test_folders_import_no_tensorflow():
    code = (
        "import sys; sys.argv = ['keras-distill']\n"
        "import keras_distill.app.folders\n"
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# -- bad folders and arguments ----------------------------------------------


def _mixed(root):
    _image_folder(root, [2])
    _write_text(str(root / "class_1" / "a.txt"), "text")
    _write_text(str(root / "class_1" / "b.txt"), "text")


def _empty_class(root):
    _image_folder(root, [2, 2])
    (root / "class_2").mkdir()
    (root / "class_2" / "notes.csv").write_text("no image here")


def _bad_image(root):
    _image_folder(root, [2, 2])
    (root / "class_1" / "broken.png").write_bytes(b"<html>not an image")


def _dangling(root):
    _image_folder(root, [2, 2])
    os.symlink(str(root / "gone.png"), str(root / "class_1" / "link.png"))


def _bad_text(root):
    _text_folder(root, [2, 2])
    (root / "class_0" / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))


def _loose_files(root):
    _write_png(str(root / "1.png"), _pixels(1, (2, 2, 3)))
    _write_png(str(root / "2.png"), _pixels(2, (2, 2, 3)))


BAD_FOLDERS = [
    (lambda root: None, r"\(no such directory\)"),
    (
        lambda root: root.parent.joinpath("file.txt").write_text("x"),
        r"\(a file\)",
    ),
    (_loose_files, r"holds files but no subfolder \(for example '1.png'\)"),
    (lambda root: root.mkdir(), "holds no subfolder"),
    (
        lambda root: _image_folder(root, [3]),
        "Expected at least two class subfolders.*Received: one, 'class_0'",
    ),
    (_empty_class, r"image files \(.*\) in every class folder.*class_2"),
    (_mixed, "not both. Received: 2 images .* and 2 text files"),
    (_bad_image, r"PNG, JPEG, GIF or BMP.*broken\.png.*<html>"),
    (_dangling, r"link\.png', which cannot be opened"),
    (_bad_text, r"UTF-8 text files.*latin1\.txt.*not valid UTF-8"),
]


BAD_IDS = [
    "missing",
    "file",
    "loose-files",
    "empty",
    "one-class",
    "empty-class",
    "mixed",
    "bad-image",
    "unopenable",
    "bad-text",
]


@pytest.mark.parametrize("make, match", BAD_FOLDERS, ids=BAD_IDS)
def test_bad_folder_errors(tmp_path, make, match):
    root = tmp_path / "data"
    make(root)
    path = str(root)
    if not os.path.exists(path) and os.path.exists(tmp_path / "file.txt"):
        path = str(tmp_path / "file.txt")
    with pytest.raises(ValueError, match="Invalid value for `dataset`"):
        folders.scan(path)
    with pytest.raises(ValueError, match=match):
        folders.scan(path)
    if os.path.isdir(path):  # `load` raises the same
        with pytest.raises(ValueError, match=match):
            data.load(path)


def test_a_class_with_one_file_cannot_be_split(tmp_path):
    _text_folder(tmp_path / "data", [3, 1])
    folder = folders.scan(str(tmp_path / "data"))
    match = r"at least two files in each class.*\['class_1'\].*test folder"
    with pytest.raises(ValueError, match=match):
        folders.split(folder)
    with pytest.raises(ValueError, match=match):
        data.load(str(tmp_path / "data"))
    with pytest.raises(ValueError, match="argument `test_fraction`"):
        folders.split(folder, 1.0)
    with pytest.raises(ValueError, match="argument `seed`"):
        folders.split(folder, 0.5, seed=-1)


def test_train_and_test_folders_must_match(tmp_path):
    _image_folder(tmp_path / "train", [2, 2, 2])
    test = tmp_path / "test"
    for name in ("class_0", "class_1", "extra"):
        _write_png(str(test / name / "a.png"), _pixels(1, (6, 8, 3)))
    match = (
        r"Invalid value for `test_dataset`.*missing \['class_2'\] and with "
        r"\['extra'\]"
    )
    with pytest.raises(ValueError, match=match):
        folders.check(str(tmp_path / "train"), str(test))
    with pytest.raises(ValueError, match=match):
        data.load(str(tmp_path / "train"), test_source=str(test))
    _text_folder(tmp_path / "texts", [1, 1, 1])
    with pytest.raises(ValueError, match="Expected image files like"):
        folders.check(str(tmp_path / "train"), str(tmp_path / "texts"))
    # A bad test folder is named as such.
    with pytest.raises(ValueError, match="`test_dataset`.*no such directory"):
        folders.check(str(tmp_path / "train"), str(tmp_path / "nowhere"))


def test_an_image_that_cannot_be_decoded(tmp_path):
    for label in (0, 1):  # a PNG signature, then nothing of an image
        for index in (0, 1):
            path = tmp_path / "data" / f"c{label}" / f"{index}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(ValueError, match=r"\.png', which cannot be decoded"):
        data.load(str(tmp_path / "data"))


def test_bad_folder_arguments(tmp_path):
    _image_folder(tmp_path / "images", [2, 2])
    _text_folder(tmp_path / "texts", [2, 2])
    images, texts = str(tmp_path / "images"), str(tmp_path / "texts")
    for kwargs, match in [
        ({"image_size": (0, 4)}, "argument `image_size`"),
        ({"image_size": 32}, "argument `image_size`"),
        ({"channels": 4}, "argument `channels`"),
        ({"validation_split": 1.0}, "argument `validation_split`"),
        ({"test_source": 3}, "argument `test_source`"),
        ({"seed": -2}, "argument `seed`"),
    ]:
        with pytest.raises(ValueError, match=match):
            data.load(images, **kwargs)
    with pytest.raises(ValueError, match="image folders only.*text files"):
        data.load(texts, image_size=(8, 8))
    with pytest.raises(ValueError, match="applies to data folders only"):
        data.load("digits", test_source=texts)
    with pytest.raises(ValueError, match="applies to data folders only"):
        data.load("digits", channels=1)
    with pytest.raises(ValueError, match="streamed from disk.*datasets.load`"):
        data.load_arrays(images)
    with pytest.raises(ValueError, match="no such file or directory"):
        data.load(str(tmp_path / "typo"))


# -- memory -----------------------------------------------------------------

_PEAK_RSS = textwrap.dedent(
    """
    import resource
    import sys

    from keras_distill.app import datasets

    d = datasets.load(sys.argv[1], batch_size=32, seed=0)
    count = sum(int(x.shape[0]) for x, _ in d.train)
    print(count, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """
)


@pytest.mark.integration
def test_streaming_memory_does_not_grow_with_the_folder(tmp_path):
    rng = np.random.default_rng(0)
    sizes = (100, 1000)
    for size in sizes:
        for i in range(size):
            label = i % 4
            _write_png(
                str(tmp_path / str(size) / f"c{label}" / f"{i}.png"),
                rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
            )
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", _PEAK_RSS, str(tmp_path / str(size))],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for size in sizes
    ]
    peaks = []
    for size, run in zip(sizes, runs):
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err[-2000:]
        count, peak_kib = map(int, out.split()[-2:])
        assert count == size - size // 5  # the training part, one epoch
        peaks.append(peak_kib * 1024)
    extra = (sizes[1] - sizes[0]) * 64 * 64 * 3 * 4  # as float32 arrays
    print(
        f"peak RSS: {peaks[0] / 2**20:.1f} MiB ({sizes[0]} images), "
        f"{peaks[1] / 2**20:.1f} MiB ({sizes[1]} images)"
    )
    assert peaks[1] - peaks[0] < extra / 3, (peaks, extra)
