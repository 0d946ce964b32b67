"""Consistent augmentation and mixup (function matching)."""

import keras
import numpy as np
import pytest
from conftest import NUM_CLASSES
from conftest import np_ce
from conftest import sparse_ce

import keras_distill
from keras_distill import augment
from keras_distill.teachers import TeacherCache


@keras.saving.register_keras_serializable(package="keras_distill_tests")
class Recorder(keras.layers.Layer):
    """Identity layer that keeps the last batch it saw."""

    def build(self, input_shape):
        self.seen = self.add_weight(
            shape=(4,) + tuple(input_shape[1:]),
            initializer="zeros",
            trainable=False,
        )

    def call(self, inputs):
        self.seen.assign(inputs)
        return inputs


def image_model(name, seed):
    inputs = keras.Input((6, 6, 1))
    h = Recorder(name=f"{name}_recorder")(inputs)
    h = keras.layers.Flatten()(h)
    out = keras.layers.Dense(
        NUM_CLASSES, kernel_initializer=keras.initializers.GlorotUniform(seed)
    )(h)
    return keras.Model(inputs, out, name=name)


def images(n=4):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(n, 6, 6, 1)).astype("float32")
    return x, np.array([0, 1, 2, 1], "int32")[:n]


def test_consistent_augmentation_gives_both_models_the_same_input():
    teacher, student = image_model("t", 1), image_model("s", 2)
    distiller = keras_distill.Distiller(
        teacher,
        student,
        augment=[augment.RandomShift(2, seed=0), augment.RandomFlip(seed=1)],
    )
    distiller.compile(keras.optimizers.SGD(0.0), sparse_ce())
    x, y = images()
    distiller.train_on_batch(x, y)
    seen_t = teacher.get_layer("t_recorder").seen.numpy()
    seen_s = student.get_layer("s_recorder").seen.numpy()
    np.testing.assert_array_equal(seen_t, seen_s)
    assert np.abs(seen_s - x).max() > 0  # it did augment
    # Each image is a shifted (maybe mirrored) copy: same pixel multiset
    # once the zero border is ignored.
    assert seen_s.sum() <= x.sum() + 1e-5


def test_random_shift_matches_numpy_roll_with_zero_fill():
    x = np.arange(2 * 5 * 5, dtype="float32").reshape(2, 5, 5, 1) + 1
    layer = augment.RandomShift(pixels=1, seed=3)
    out = keras.ops.convert_to_numpy(layer(x, training=True))
    for i in range(2):
        matches = []
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                padded = np.pad(x[i], ((1, 1), (1, 1), (0, 0)))
                crop = padded[1 + dy : 6 + dy, 1 + dx : 6 + dx]
                matches.append(np.array_equal(crop, out[i]))
        assert any(matches)
    np.testing.assert_array_equal(layer(x, training=False), x)


def test_mixup_mixes_inputs_with_one_coefficient_and_a_permutation():
    x = np.random.default_rng(1).normal(size=(8, 3)).astype("float32")
    mixed, perm, lam = augment.Mixup(alpha=0.4, seed=2).mix(x)
    perm, lam = keras.ops.convert_to_numpy(perm), float(lam)
    assert sorted(perm.tolist()) == list(range(8))
    assert 0.0 <= lam <= 1.0
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(mixed),
        lam * x + (1 - lam) * x[perm],
        rtol=1e-5,
        atol=1e-6,
    )


class FixedMixup(augment.Mixup):
    """Mixup with a known coefficient and permutation, for the test."""

    def mix(self, x):
        perm = keras.ops.convert_to_tensor([1, 0, 3, 2], "int32")
        mixed = 0.7 * x + 0.3 * keras.ops.take(x, perm, axis=0)
        return mixed, perm, keras.ops.convert_to_tensor(0.7, "float32")


def test_mixup_mixes_the_labels_with_the_same_coefficient():
    teacher, student = image_model("t", 1), image_model("s", 2)
    distiller = keras_distill.Distiller(
        teacher, student, augment=[FixedMixup()]
    )
    distiller.compile(keras.optimizers.SGD(0.0), sparse_ce())
    x, y = images()
    logs = distiller.train_on_batch(x, y, return_dict=True)
    mixed = 0.7 * x + 0.3 * x[[1, 0, 3, 2]]
    seen = student.get_layer("s_recorder").seen.numpy()
    np.testing.assert_allclose(seen, mixed, rtol=1e-6)
    s = student.predict(mixed, verbose=0)
    want = 0.7 * np_ce(s, y).mean() + 0.3 * np_ce(s, y[[1, 0, 3, 2]]).mean()
    np.testing.assert_allclose(logs["student_loss"], want, rtol=1e-5)


def test_augmentation_is_refused_with_a_cache_and_saved_with_the_distiller(
    tmp_path,
):
    teacher, student = image_model("t", 1), image_model("s", 2)
    distiller = keras_distill.Distiller(
        teacher,
        student,
        augment=augment.ConsistentAugment(
            [augment.RandomShift(1, seed=0), augment.Mixup(0.3, seed=1)]
        ),
    )
    distiller.compile(keras.optimizers.SGD(0.1), sparse_ce())
    x, y = images()
    cache = TeacherCache(teacher, x, verbose=0)
    with pytest.raises(ValueError, match="Expected the teacher online"):
        distiller.fit(cache.dataset(x, y, batch_size=4), verbose=0)
    distiller.save(tmp_path / "d.keras")
    loaded = keras.models.load_model(tmp_path / "d.keras")
    layers = loaded.augment.augment_layers
    assert [type(x).__name__ for x in layers] == ["RandomShift", "Mixup"]
    assert layers[1].alpha == 0.3
    with pytest.raises(ValueError, match="Expected `Mixup` last"):
        augment.ConsistentAugment([augment.Mixup(), augment.RandomFlip()])
    with pytest.raises(ValueError, match="Received: augment='shift'"):
        keras_distill.Distiller(teacher, student, augment="shift")
