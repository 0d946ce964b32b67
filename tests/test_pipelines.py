"""Seeded pipelines: shuffles and shifts that depend on their seed alone,
and `ResumableData` setting them to the epoch's pass."""

import numpy as np
import pytest

from keras_distill import pipelines
from keras_distill.app import datasets as data


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

    def build():
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

    straight = [_passes(ds, 4) for ds in build()]
    resumable = ResumableData()
    with resumable:
        fresh = build()
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


@pytest.mark.parametrize("n, batch_size", [(10, 4), (12, 4), (3, 8)])
@pytest.mark.parametrize("shuffled", [False, True])
def test_batched_serves_the_batches_of_from_tensor_slices(
    n, batch_size, shuffled
):
    # Gathered straight into batches: the same batches as slicing the
    # examples in that order one by one, the last one smaller, a
    # structure kept as it is.
    import tensorflow as tf

    x = np.arange(n * 6, dtype="float32").reshape(n, 2, 3)
    order = np.random.default_rng(n).permutation(n) if shuffled else None
    tensors = ({"a": tf.constant(x)}, tf.constant(np.arange(n) * 10))
    got = list(pipelines.batched(tensors, batch_size, order))
    served = x if order is None else x[order]
    labels = np.arange(n) * 10 if order is None else order * 10
    want = list(
        tf.data.Dataset.from_tensor_slices(({"a": served}, labels)).batch(
            batch_size
        )
    )
    assert len(got) == len(want) == -(-n // batch_size)
    for (g_x, g_y), (w_x, w_y) in zip(got, want):
        np.testing.assert_array_equal(g_x["a"].numpy(), w_x["a"].numpy())
        np.testing.assert_array_equal(g_y.numpy(), w_y.numpy())
