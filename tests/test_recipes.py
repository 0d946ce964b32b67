"""Recipes: reverse KD, born-again networks, mutual learning."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import data
from conftest import mlp
from conftest import np_ce
from conftest import np_kd
from conftest import sparse_ce

from keras_distill import recipes
from keras_distill.teachers import Ensemble


def dataset(n=32, seed=0):
    x, y = data(n, seed)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(16)


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


def test_born_again_hooks_make_fit_and_see_every_generation():
    from keras_distill.distiller import Distiller

    teacher = mlp(8, "g0", seed=0)
    build = iter([mlp(8, f"g{k}", seed=k) for k in (1, 2)]).__next__
    calls = []

    def make(previous, student):
        calls.append(("distiller", previous.name, student.name))
        distiller = Distiller(previous, student, "kd", student_loss_weight=0.3)
        distiller.compile(keras.optimizers.SGD(0.01), sparse_ce())
        return distiller

    def fit(trainer, model, k):
        calls.append(("fit", k, model.name, trainer.student is model))
        return trainer.fit(dataset(), epochs=1, verbose=0, shuffle=False)

    def seen(k, trained):
        calls.append(("seen", k, trained.name, trained.model.compiled))

    result = recipes.born_again(
        build,
        None,  # `fit` feeds every fit
        generations=2,
        teacher=teacher,
        distiller_fn=make,
        fit_fn=fit,
        on_generation=seen,
    )
    assert calls == [
        ("seen", 0, "generation_0", True),
        ("distiller", "g0", "g1"),
        ("fit", 1, "g1", True),
        ("seen", 1, "generation_1", True),
        ("distiller", "g1", "g2"),
        ("fit", 2, "g2", True),
        ("seen", 2, "generation_2", True),
    ]
    epochs = [len(g.history.get("loss", [])) for g in result.generations]
    assert epochs == [0, 1, 1]  # generation 0 was given, not trained
    # A generation 0 trained here goes through `fit_fn` too.
    fits = []

    def fit_labels(trainer, model, k):
        fits.append((k, trainer is model))
        return trainer.fit(dataset(), epochs=1, verbose=0, shuffle=False)

    build = iter([mlp(8, f"h{k}", seed=k) for k in range(2)]).__next__
    recipes.born_again(build, None, generations=1, fit_fn=fit_labels)
    assert fits == [(0, True), (1, False)]


def test_born_again_refuses_bad_hooks_and_no_data():
    build = lambda: mlp(8, "g", seed=0)  # noqa: E731
    with pytest.raises(ValueError, match="Received: fit_fn=3"):
        recipes.born_again(build, dataset(), fit_fn=3)
    with pytest.raises(ValueError, match="Received: on_generation='x'"):
        recipes.born_again(build, dataset(), on_generation="x")
    with pytest.raises(ValueError, match="Received: train_data=None"):
        recipes.born_again(build, None)


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
