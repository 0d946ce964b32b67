import numpy as np
import pytest

from keras_distill import pipelines
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


def test_shift_augment_moves_images_and_keeps_labels():
    import tensorflow as tf

    x = np.zeros((8, 10, 10, 1), "float32")
    x[:, 4:6, 4:6] = 1.0
    y = np.arange(8, dtype="int32")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    ((shifted, labels),) = list(pipelines.shift_augment(ds, pixels=2, seed=1))
    np.testing.assert_array_equal(labels.numpy(), y)
    assert shifted.shape == x.shape
    # The 2x2 square keeps its mass when shifted by at most 2 pixels.
    np.testing.assert_allclose(shifted.numpy().sum(axis=(1, 2, 3)), 4.0, 1e-5)
    moved = [not np.array_equal(s, x[0]) for s in shifted.numpy()]
    assert sum(moved) >= 4


def test_shift_augment_leaves_flat_features_alone():
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(
        (np.ones((4, 3), "float32"), np.zeros(4, "int32"))
    ).batch(2)
    assert pipelines.shift_augment(ds) is ds


def test_shift_augment_is_deterministic_per_seed_and_varies_by_epoch():
    d = data.load("digits", batch_size=128, seed=0)
    aug = pipelines.shift_augment(d.train, seed=4)
    first = [x.numpy() for x, _ in aug]
    second = [x.numpy() for x, _ in aug]
    fresh = data.load("digits", batch_size=128, seed=0)
    again = [x.numpy() for x, _ in pipelines.shift_augment(fresh.train, seed=4)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, second))


def test_order_and_shifts_depend_on_their_seed_alone():
    # A seeded `Dataset.shuffle` or `Dataset.random` mixes in TensorFlow's
    # global seed; ours must not, whatever was set before the call.
    import keras

    def two_epochs(global_seed, seed=5):
        keras.utils.set_random_seed(global_seed)
        d = data.load("digits", batch_size=128, seed=seed)
        aug = pipelines.shift_augment(d.train, seed=seed)
        return [
            np.concatenate([x.numpy() for x, _ in ds])
            for ds in (d.train, d.train, aug)
        ]

    a, b, c = two_epochs(1), two_epochs(2), two_epochs(2, seed=6)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], a[1])  # reshuffled each epoch
    assert sorted(map(bytes, a[0])) == sorted(map(bytes, a[1]))
    assert not np.array_equal(a[0], c[0])  # another seed, another order


def test_a_pass_cut_short_does_not_move_the_next_ones_shifts():
    d = data.load("digits", batch_size=128, seed=0)
    whole = pipelines.shift_augment(d.train, seed=4)
    cut = pipelines.shift_augment(
        data.load("digits", batch_size=128, seed=0).train, seed=4
    )
    list(whole)
    list(cut.take(2))  # the first pass read only partly
    np.testing.assert_array_equal(
        np.concatenate([x.numpy() for x, _ in whole]),
        np.concatenate([x.numpy() for x, _ in cut]),
    )


def _passes(dataset, count):
    return [
        np.concatenate([x.numpy() for x, _ in dataset]) for _ in range(count)
    ]


def test_resumable_data_sets_every_pipeline_to_the_epochs_pass():
    from keras_distill.callbacks import ResumableData
    from keras_distill.teachers import TeacherCache

    rng = np.random.default_rng(0)
    x = rng.random((96, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 10, 96)

    def pipelines():
        cache = TeacherCache(_flat_teacher(x.shape[1:]), x, views=2, verbose=0)
        return [
            pipelines.pipeline(x, y, 32, shuffle=True, seed=3),
            pipelines.shift_augment(
                pipelines.pipeline(x, y, 32, shuffle=True, seed=3), seed=4
            ),
            cache.dataset(x, y, batch_size=32, seed=3).map(
                lambda features, y: (features["inputs"], y)
            ),
        ]

    straight = [_passes(ds, 4) for ds in pipelines()]
    resumable = ResumableData()
    with resumable:
        fresh = pipelines()
    # Two shuffles, the shifts, the cache's order and its views.
    assert resumable.pipelines == 5
    resumable.set_epoch(2)
    for ds, ref in zip(fresh, straight):
        got = _passes(ds, 2)  # epoch 2, then on to epoch 3 by itself
        np.testing.assert_array_equal(got[0], ref[2])
        np.testing.assert_array_equal(got[1], ref[3])
        assert not np.array_equal(ref[2], ref[3])
    resumable.set_epoch(0)
    np.testing.assert_array_equal(_passes(fresh[1], 1)[0], straight[1][0])
    with pytest.raises(ValueError, match=r"integer >= 0.*epoch=-1"):
        resumable.set_epoch(-1)
    # Pipelines built after the block are not recorded.
    pipelines.pipeline(x, y, 32, shuffle=True, seed=3)
    assert resumable.pipelines == 5


def _flat_teacher(input_shape):
    import keras

    inputs = keras.Input(input_shape)
    outputs = keras.layers.Dense(10)(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, outputs)


def test_resumable_data_refuses_a_fit_with_no_pipeline_recorded():
    import keras

    from keras_distill.callbacks import ResumableData

    d = data.load("digits", batch_size=256, seed=0)
    model = _flat_teacher(d.input_shape)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(True))
    with pytest.raises(ValueError, match="recorded no seeded pipeline"):
        model.fit(
            d.train,
            epochs=1,
            verbose=0,
            shuffle=False,
            callbacks=[ResumableData()],
        )
