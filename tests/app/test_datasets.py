import numpy as np
import pytest

from keras_distill.app import datasets as data


def test_mnist5k_split_is_stratified_and_fixed():
    a = data.load_arrays("mnist5k")
    assert a.x_train.shape == (4000, 28, 28, 1)
    assert a.x_test.shape == (1000, 28, 28, 1)
    assert a.x_train.dtype == np.float32
    assert 0.0 <= a.x_train.min() and a.x_train.max() <= 1.0
    assert np.bincount(a.y_train).tolist() == [400] * 10
    assert np.bincount(a.y_test).tolist() == [100] * 10
    b = data.load_arrays("mnist5k", seed=99)
    np.testing.assert_array_equal(a.x_test, b.x_test)  # the split never moves
    # No image is in both parts.
    train = {x.tobytes() for x in a.x_train}
    assert not any(x.tobytes() in train for x in a.x_test)
    # The parsed file is kept for the process; what a load returns is the
    # caller's own copy.
    a.x_train[:] = 7.0
    c = data.load_arrays("mnist5k")
    assert c.x_train.max() <= 1.0
    np.testing.assert_array_equal(b.x_train, c.x_train)


def test_validation_slice_comes_from_train_part():
    a = data.load_arrays("mnist5k", validation_split=0.1, seed=3)
    assert len(a.x_val) == 400 and len(a.x_train) == 3600
    assert len(a.x_test) == 1000


def test_digits():
    d = data.load("digits", batch_size=32, validation_split=0.2, seed=1)
    assert d.input_shape == (8, 8, 1) and d.num_classes == 10
    n = sum(int(x.shape[0]) for x, _ in d.train)
    n_val = sum(int(x.shape[0]) for x, _ in d.validation)
    n_test = sum(int(x.shape[0]) for x, _ in d.test)
    assert n + n_val + n_test == 1797
    x, y = next(iter(d.train))
    assert x.shape == (32, 8, 8, 1) and y.dtype == "int32"


def test_train_pipeline_is_seeded():
    first = [y.numpy().tolist() for _, y in data.load("digits", seed=5).train]
    again = [y.numpy().tolist() for _, y in data.load("digits", seed=5).train]
    other = [y.numpy().tolist() for _, y in data.load("digits", seed=6).train]
    assert first == again and first != other


def test_npz_file(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "mine.npz"
    np.savez(
        path,
        x_train=rng.integers(0, 255, (30, 5, 5), dtype=np.uint8),
        y_train=rng.integers(0, 4, 30),
        x_test=rng.integers(0, 255, (10, 5, 5), dtype=np.uint8),
        y_test=np.eye(4)[rng.integers(0, 4, 10)],  # one-hot is accepted
    )
    d = data.load(str(path), batch_size=8)
    assert d.input_shape == (5, 5, 1) and d.num_classes == 4
    assert d.arrays.x_train.max() <= 1.0
    assert d.arrays.y_test.shape == (10,)


def test_npz_missing_arrays(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=np.zeros((2, 3)), y_train=np.zeros(2, int))
    with pytest.raises(ValueError, match=r"missing \['x_test', 'y_test'\]"):
        data.load(str(path))


def test_npz_not_found():
    with pytest.raises(FileNotFoundError, match="No such file"):
        data.load("nowhere.npz")


def test_npz_corrupted(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="not a readable `.npz` file"):
        data.load(str(path))


def test_npz_bad_labels(tmp_path):
    path = tmp_path / "neg.npz"
    np.savez(
        path,
        x_train=np.zeros((3, 2)),
        y_train=np.array([0, -1, 1]),
        x_test=np.zeros((1, 2)),
        y_test=np.array([0]),
    )
    with pytest.raises(ValueError, match="non-negative integer class labels"):
        data.load(str(path))


def test_npz_nan_inputs(tmp_path):
    path = tmp_path / "nan.npz"
    x = np.zeros((3, 2))
    x[1, 1] = np.nan
    np.savez(path, x_train=x, y_train=[0, 1, 0], x_test=x[:1], y_test=[0])
    with pytest.raises(ValueError, match="Expected finite values in x_train"):
        data.load(str(path))


def test_tfds_offline_gives_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="tfds build mnist"):
        data.load("tfds:mnist", data_dir=str(tmp_path))


def test_tfds_unknown_name(tmp_path):
    with pytest.raises(ValueError, match="Unknown TFDS dataset 'no_such_set'"):
        data.load("tfds:no_such_set", data_dir=str(tmp_path))


def test_tfds_on_disk(tmp_path):
    # A TFDS dataset prepared locally from generated arrays (no network),
    # with tfds' own builder API.
    import tensorflow_datasets as tfds

    class TinyDigits(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Image(shape=(4, 4, 1)),
                        "label": tfds.features.ClassLabel(num_classes=3),
                    }
                ),
                supervised_keys=("image", "label"),
            )

        def _split_generators(self, dl_manager):
            return {
                "train": self._generate_examples(12),
                "test": self._generate_examples(6),
            }

        def _generate_examples(self, n):
            rng = np.random.default_rng(n)
            for i in range(n):
                image = rng.integers(0, 255, (4, 4, 1), dtype=np.uint8)
                yield i, {"image": image, "label": i % 3}

    TinyDigits(data_dir=str(tmp_path)).download_and_prepare()
    d = data.load("tfds:tiny_digits", data_dir=str(tmp_path), batch_size=4)
    assert d.input_shape == (4, 4, 1) and d.num_classes == 3
    assert len(d.arrays.x_train) == 12 and len(d.arrays.x_test) == 6
    assert d.arrays.x_train.max() <= 1.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"source": "cifar"}, "argument `source`"),
        ({"source": 3}, "argument `source`"),
        ({"batch_size": 0}, "argument `batch_size`"),
        ({"batch_size": 2.5}, "argument `batch_size`"),
        ({"validation_split": 1.0}, "argument `validation_split`"),
    ],
)
def test_bad_arguments(kwargs, match):
    kwargs = {"source": "digits", **kwargs}
    with pytest.raises(ValueError, match=match):
        data.load(**kwargs)
