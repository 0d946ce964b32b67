"""The new methods inside a Distiller: adapters, nesting, schedules."""

import keras
import numpy as np
import pytest
from conftest import CallCounter
from conftest import data
from conftest import mlp
from conftest import np_kd
from conftest import sparse_ce

import keras_distill
from keras_distill import callbacks
from keras_distill import losses


def cnn(name, channels, pool, counter=False, seed=0):
    """A tiny image model: 'feat' (8 / pool pixels a side), then logits."""
    init = keras.initializers.GlorotUniform(seed=seed)
    inputs = keras.Input((8, 8, 1), name=f"{name}_in")
    h = inputs
    if counter:
        h = CallCounter(name=f"{name}_counter")(h)
    h = keras.layers.Conv2D(
        channels,
        3,
        padding="same",
        activation="relu",
        kernel_initializer=init,
        name="feat" if pool == 1 else "conv",
    )(h)
    if pool > 1:
        h = keras.layers.MaxPooling2D(pool, name="feat")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    outputs = keras.layers.Dense(3, kernel_initializer=init, name="logits")(h)
    return keras.Model(inputs, outputs, name=name)


def images(n=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8, 8, 1)).astype("float32")
    y = (x.mean(axis=(1, 2, 3)) > 0).astype("int32") + (x[:, 0, 0, 0] > 1)
    return x, y.astype("int32")


def hint_distiller(counter=False):
    teacher = cnn("teacher", channels=6, pool=1, seed=1)
    student = cnn("student", channels=2, pool=2, counter=counter, seed=2)
    hint = losses.FeatureDistillation("feat", "feat")
    distiller = keras_distill.Distiller(
        teacher, student, [losses.LogitsDistillation(2.0), hint]
    )
    distiller.compile(keras.optimizers.SGD(0.05), sparse_ce())
    return distiller, hint


def test_feature_hint_with_mismatched_shapes_trains_once_per_step(tmp_path):
    distiller, hint = hint_distiller(counter=True)
    adapter = hint.layers[0]
    assert [type(x).__name__ for x in adapter.layers] == ["Resizing", "Conv2D"]
    assert adapter.output_shape == (None, 8, 8, 6)
    x, y = images()
    before = [w.numpy().copy() for w in adapter.weights]
    distiller.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    counter = distiller.student.get_layer("student_counter").count
    assert float(counter.numpy()) == 4.0  # 2 epochs x 2 batches, once each
    after = [w.numpy() for w in adapter.weights]
    assert any(np.abs(a - b).max() > 0 for a, b in zip(after, before))
    # The adapter trains with the student but is not part of it.
    trained = {id(w) for w in distiller.trainable_weights}
    assert all(id(w) in trained for w in adapter.trainable_weights)
    student_ids = {id(w) for w in distiller.student.weights}
    assert not any(id(w) in student_ids for w in adapter.weights)
    distiller.student.save(tmp_path / "student.keras")
    exported = keras.models.load_model(tmp_path / "student.keras")
    assert len(exported.weights) == len(distiller.student.weights)
    assert "adapter" not in str([w.path for w in exported.weights])


def test_distiller_with_adapter_saves_and_reloads(tmp_path):
    distiller, hint = hint_distiller()
    x, y = images()
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    distiller.save(tmp_path / "distiller.keras")
    loaded = keras.models.load_model(tmp_path / "distiller.keras")
    new_hint = loaded.distillation_losses[1]
    assert isinstance(new_hint, losses.FeatureDistillation)
    for a, b in zip(hint.layers[0].weights, new_hint.layers[0].weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), distiller.predict(x, verbose=0)
    )
    # Same objective on a batch, adapter included.
    loaded.compile(keras.optimizers.SGD(0.05), sparse_ce())
    got = loaded.evaluate(x, y, verbose=0, return_dict=True)
    want = distiller.evaluate(x, y, verbose=0, return_dict=True)
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-6)


@pytest.mark.filterwarnings("ignore:Gradients do not exist")
def test_hint_loss_value_matches_numpy_with_a_given_adapter():
    teacher, student = mlp(5, "teacher", seed=1), mlp(4, "student", seed=2)
    adapter = keras.layers.Dense(5, name="bridge")
    hint = losses.FeatureDistillation("teacher_h", "student_h", adapter=adapter)
    distiller = keras_distill.Distiller(
        teacher, student, hint, student_loss_weight=0.0
    )
    distiller.compile(keras.optimizers.SGD(0.0), loss=None)
    x, _ = data(8)
    t_h = keras.Model(teacher.input, teacher.get_layer("teacher_h").output)
    s_h = keras.Model(student.input, student.get_layer("student_h").output)
    kernel, bias = (w.numpy() for w in adapter.weights)
    want = np.mean((t_h(x).numpy() - (s_h(x).numpy() @ kernel + bias)) ** 2)
    logs = distiller.train_on_batch(x, return_dict=True)
    np.testing.assert_allclose(logs["distillation_loss"], want, rtol=1e-5)


def test_feature_hint_without_adapter_needs_equal_shapes():
    teacher, student = mlp(5, "teacher"), mlp(4, "student")
    with pytest.raises(ValueError, match="Expected features of the same"):
        keras_distill.Distiller(
            teacher,
            student,
            losses.FeatureDistillation("teacher_h", "student_h", adapter=None),
        )
    with pytest.raises(ValueError, match="maps the student's feature shape"):
        keras_distill.Distiller(
            teacher,
            student,
            losses.FeatureDistillation(
                "teacher_h", "student_h", adapter=keras.layers.Dense(3)
            ),
        )


def nested_student(counter=True):
    """A Sequential whose first layer is a Functional backbone."""
    inputs = keras.Input((6,), name="bb_in")
    h = CallCounter(name="bb_counter")(inputs) if counter else inputs
    h = keras.layers.Dense(4, activation="relu", name="inner_hidden")(h)
    backbone = keras.Model(inputs, h, name="backbone")
    return keras.Sequential(
        [keras.Input((6,)), backbone, keras.layers.Dense(3, name="head")],
        name="nested",
    )


def test_feature_layers_are_found_inside_nested_models():
    teacher = mlp(5, "teacher", seed=1)
    student = nested_student()
    distiller = keras_distill.Distiller(
        teacher,
        student,
        [
            losses.LogitsDistillation(2.0),
            losses.FeatureDistillation("teacher_h", "inner_hidden"),
        ],
    )
    distiller.compile(keras.optimizers.SGD(0.05), sparse_ce())
    x, y = data(16)
    logs = distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(logs.history["loss"][0])
    counter = student.get_layer("backbone").get_layer("bb_counter").count
    assert float(counter.numpy()) == 2.0  # once per step, not twice
    np.testing.assert_allclose(
        distiller.predict(x, verbose=0), student.predict(x, verbose=0)
    )
    with pytest.raises(ValueError, match="Received: 'missing'"):
        keras_distill.Distiller(
            teacher, student, losses.FeatureDistillation("teacher_h", "missing")
        )


def test_attention_transfer_and_rkd_train_inside_a_distiller():
    teacher = cnn("teacher", channels=6, pool=1, seed=1)
    student = cnn("student", channels=2, pool=2, seed=2)
    distiller = keras_distill.Distiller(
        teacher,
        student,
        [
            losses.LogitsDistillation(2.0),
            losses.AttentionTransfer(("feat", "feat")),
            losses.RelationalDistillation(teacher_layer="logits"),
        ],
    )
    distiller.compile(keras.optimizers.SGD(0.01), sparse_ce())
    x, y = images()
    history = distiller.fit(x, y, batch_size=8, epochs=3, verbose=0)
    losses_seen = history.history["distillation_loss"]
    assert all(np.isfinite(losses_seen))


def test_teacher_free_kd_trains_without_a_teacher(tmp_path):
    student = mlp(4, "student")
    loss = losses.TeacherFreeKD(correct_prob=0.8, temperature=2.0)
    distiller = keras_distill.Distiller(None, student, loss)
    distiller.compile(keras.optimizers.SGD(0.0), sparse_ce())
    x, y = data(8)
    logs = distiller.train_on_batch(x, y, return_dict=True)
    q = np.full((8, 3), 0.1)
    q[np.arange(8), y] = 0.8
    want = np_kd(np.log(q), student.predict(x, verbose=0), 2.0)
    np.testing.assert_allclose(logs["distillation_loss"], want, rtol=1e-5)
    distiller.save(tmp_path / "tf_kd.keras")
    loaded = keras.models.load_model(tmp_path / "tf_kd.keras")
    assert loaded.teacher is None
    with pytest.raises(ValueError, match="need a teacher"):
        keras_distill.Distiller(None, student, losses.LogitsDistillation())


def test_dkd_warmup_follows_the_epochs_of_fit():
    teacher, student = mlp(5, "teacher", seed=1), mlp(4, "student", seed=2)
    loss = losses.DKD(warmup_epochs=4)
    distiller = keras_distill.Distiller(teacher, student, loss)
    distiller.compile(keras.optimizers.SGD(0.0), sparse_ce())
    x, y = data(16)
    history = distiller.fit(x, y, batch_size=16, epochs=3, verbose=0)
    assert loss.warmup_factor == 0.75
    seen = history.history["distillation_loss"]
    # With a zero learning rate, only the warm-up factor changes.
    np.testing.assert_allclose(
        np.array(seen) / seen[0], [1.0, 2.0, 3.0], rtol=1e-5
    )


def test_temperature_schedule_changes_the_loss_between_epochs():
    teacher, student = mlp(5, "teacher", seed=1), mlp(4, "student", seed=2)
    distiller = keras_distill.Distiller(
        teacher, student, losses.LogitsDistillation(1.0)
    )
    distiller.compile(keras.optimizers.SGD(0.0), sparse_ce())
    x, y = data(16)
    schedule = callbacks.TemperatureSchedule("linear", 1.0, 4.0, epochs=4)
    history = distiller.fit(
        x, y, batch_size=16, epochs=4, verbose=0, callbacks=[schedule]
    )
    t_logits = teacher.predict(x, verbose=0)
    s_logits = student.predict(x, verbose=0)
    want = [np_kd(t_logits, s_logits, t) for t in (1.0, 2.0, 3.0, 4.0)]
    np.testing.assert_allclose(
        history.history["distillation_loss"], want, rtol=1e-5
    )
    assert history.history["temperature"] == [1.0, 2.0, 3.0, 4.0]
    assert distiller.temperature == 4.0


def test_loss_weight_schedule_targets_one_loss_or_alpha():
    teacher, student = mlp(5, "teacher", seed=1), mlp(4, "student", seed=2)
    distiller = keras_distill.Distiller(
        teacher,
        student,
        [losses.LogitsDistillation(2.0), losses.RelationalDistillation()],
        student_loss_weight=0.5,
    )
    distiller.compile(keras.optimizers.SGD(0.0), sparse_ce())
    x, y = data(16)
    rkd = callbacks.LossWeightSchedule(
        lambda epoch: 0.5 * epoch, target="relational_distillation"
    )
    alpha = callbacks.LossWeightSchedule(
        "cosine", start=1.0, end=0.0, epochs=3, target="student"
    )
    history = distiller.fit(
        x, y, batch_size=16, epochs=3, verbose=0, callbacks=[rkd, alpha]
    )
    assert distiller.distillation_loss_weights == [1.0, 1.0]
    assert history.history["student_loss_weight"] == [1.0, 0.5, 0.0]
    # With alpha = 1 the first epoch's loss is the supervised loss alone.
    np.testing.assert_allclose(
        history.history["loss"][0],
        history.history["student_loss"][0],
        rtol=1e-6,
    )
    bad = callbacks.LossWeightSchedule("constant", end=1.0, target="nope")
    with pytest.raises(ValueError, match="Received: target='nope'"):
        distiller.fit(x, y, epochs=1, verbose=0, callbacks=[bad])


def test_named_schedules_follow_their_formulas():
    linear = callbacks.schedule("linear", 8.0, 2.0, epochs=4)
    assert [linear(e) for e in range(5)] == [8.0, 6.0, 4.0, 2.0, 2.0]
    cosine = callbacks.schedule("cosine", 0.0, 1.0, epochs=3)
    np.testing.assert_allclose([cosine(e) for e in range(3)], [0, 0.5, 1])
    warmup = callbacks.schedule("warmup", end=2.0, epochs=4)
    assert [warmup(e) for e in range(5)] == [0.5, 1.0, 1.5, 2.0, 2.0]
    assert callbacks.schedule("constant", end=3.0)(7) == 3.0
    with pytest.raises(ValueError, match="Received: schedule='step'"):
        callbacks.schedule("step")
    with pytest.raises(ValueError, match="Received: epochs=0"):
        callbacks.TemperatureSchedule("linear", 1.0, 2.0, epochs=0)
    config = callbacks.LossWeightSchedule(
        "warmup", end=1.0, epochs=3, target=0
    ).get_config()
    clone = callbacks.LossWeightSchedule.from_config(config)
    assert clone.get_config() == config
