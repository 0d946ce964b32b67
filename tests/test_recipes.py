"""Recipes (reverse KD, born-again, mutual learning) and augmentation."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import NUM_CLASSES
from conftest import data
from conftest import mlp
from conftest import np_kd
from conftest import np_log_softmax
from conftest import sparse_ce

import keras_distill
from keras_distill import augment
from keras_distill import recipes
from keras_distill.teachers import Ensemble
from keras_distill.teachers import TeacherCache


def dataset(n=32, seed=0):
    x, y = data(n, seed)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(16)


def np_ce(logits, y):
    return -np_log_softmax(logits.astype(np.float64))[np.arange(len(y)), y]


def test_reverse_distill_trains_the_large_model():
    small, large = mlp(4, "small", seed=1), mlp(32, "large", seed=2)
    before = [w.copy() for w in large.get_weights()]
    result = recipes.reverse_distill(
        small, large, dataset(), epochs=2, test_data=dataset(16, seed=3)
    )
    assert result.model is large and result.name == "reverse"
    assert len(result.history["loss"]) == 2
    assert 0.0 <= result.metrics["accuracy"] <= 1.0
    assert any(
        np.abs(a - b).max() > 0 for a, b in zip(large.get_weights(), before)
    )
    assert len(large.weights) == len(before)  # the student alone


def test_born_again_returns_every_generation_and_their_ensemble():
    count = []

    def build():
        count.append(1)
        return mlp(8, f"gen{len(count)}", seed=len(count))

    result = recipes.born_again(
        build, data(32), generations=2, epochs=1, test_data=dataset(16, 3)
    )
    assert len(count) == 3  # generation 0, then two born-again ones
    names = [g.name for g in result.generations]
    assert names == ["generation_0", "generation_1", "generation_2"]
    models = [g.model for g in result.generations]
    assert len({id(m) for m in models}) == 3
    assert all(0.0 <= g.metrics["accuracy"] <= 1.0 for g in result.generations)
    assert isinstance(result.ensemble, Ensemble)
    assert len(result.ensemble.teachers) == 2
    assert 0.0 <= result.ensemble_metrics["accuracy"] <= 1.0
    with pytest.raises(ValueError, match="Received: generations=0"):
        recipes.born_again(build, dataset(), generations=0)


def test_born_again_defaults_to_t_1_and_half_weight_labels(monkeypatch):
    from keras_distill import distiller as distiller_module

    made = []

    class Recording(distiller_module.Distiller):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(distiller_module, "Distiller", Recording)
    build = iter([mlp(8, f"g{k}", seed=k) for k in range(5)]).__next__
    recipes.born_again(build, data(32), generations=2, epochs=1)
    assert [float(d.temperature) for d in made] == [1.0, 1.0]
    assert [float(d.student_loss_weight) for d in made] == [0.5, 0.5]
    # Given values are passed to every generation.
    made.clear()
    recipes.born_again(
        build, data(32), generations=1, epochs=1, temperature=3.0, alpha=0.2
    )
    assert float(made[0].temperature) == 3.0
    np.testing.assert_allclose(float(made[0].student_loss_weight), 0.2)


def test_mutual_learning_loss_matches_numpy():
    models = [mlp(4, "a", seed=1), mlp(5, "b", seed=2), mlp(6, "c", seed=3)]
    mutual = recipes.MutualLearning(models, temperature=2.0)
    mutual.compile(keras.optimizers.SGD(0.0), sparse_ce(), ["accuracy"])
    x, y = data(16)
    logits = [m.predict(x, verbose=0) for m in models]
    logs = mutual.train_on_batch(x, y, return_dict=True)
    for i, m in enumerate(models):
        kl = sum(np_kd(logits[j], logits[i], 2.0) for j in range(3) if j != i)
        want = np_ce(logits[i], y).mean() + kl / 2
        np.testing.assert_allclose(logs[f"{m.name}_loss"], want, rtol=1e-5)
        accuracy = (logits[i].argmax(-1) == y).mean()
        np.testing.assert_allclose(logs[f"{m.name}_accuracy"], accuracy)
    np.testing.assert_allclose(
        logs["loss"], sum(logs[f"{m.name}_loss"] for m in models), rtol=1e-6
    )


def test_mutual_learning_detaches_the_peers_predictions():
    # Model a's gradient must come from a's own loss only: with b's loss
    # term removed (b alone), a's update is unchanged.
    x, y = data(16)
    a1, b1 = mlp(4, "a", seed=1), mlp(5, "b", seed=2)
    mutual = recipes.MutualLearning([a1, b1])
    mutual.compile(keras.optimizers.SGD(0.1), sparse_ce())
    mutual.train_on_batch(x, y)
    a2, b2 = mlp(4, "a", seed=1), mlp(5, "b", seed=2)
    with tf.GradientTape() as tape:
        s_a, s_b = a2(x, training=True), b2(x, training=True)
        own = recipes.mutual_loss([s_a, s_b], y)[0]
    grads = tape.gradient(own, a2.trainable_weights)
    for w, g, trained in zip(a2.trainable_weights, grads, a1.trainable_weights):
        np.testing.assert_allclose(
            trained.numpy(), w.numpy() - 0.1 * g.numpy(), atol=1e-6
        )


def test_mutual_learning_models_train_and_export_alone(tmp_path):
    models = [mlp(4, "a", seed=1), mlp(5, "b", seed=2)]
    mutual = recipes.MutualLearning(models)
    mutual.compile("adam", sparse_ce(), ["accuracy"])
    history = mutual.fit(dataset(), epochs=2, verbose=0, shuffle=False)
    assert {"a_loss", "b_loss", "a_accuracy", "b_accuracy", "loss"} <= set(
        history.history
    )
    models[1].save(tmp_path / "b.keras")
    loaded = keras.models.load_model(tmp_path / "b.keras")
    x, _ = data(8)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), models[1].predict(x, verbose=0)
    )
    with pytest.raises(ValueError, match="at least two"):
        recipes.MutualLearning(models[:1])
    with pytest.raises(ValueError, match="distinct model names"):
        recipes.MutualLearning([models[0], mlp(3, "a")])


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
