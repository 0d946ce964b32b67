import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import NUM_CLASSES
from conftest import NUM_FEATURES
from conftest import copy_model
from conftest import data
from conftest import mlp
from conftest import needs_keras_distillation
from conftest import np_kd
from conftest import sparse_ce

import keras_distill
from keras_distill import Distiller
from keras_distill import _objective as objective
from keras_distill import losses


def make(alpha=0.5, counter=False, **kwargs):
    teacher = mlp(16, "teacher", counter=counter, seed=1)
    student = mlp(4, "student", counter=counter, seed=2)
    return Distiller(teacher, student, student_loss_weight=alpha, **kwargs)


def counts(distiller):
    return (
        float(distiller.teacher.get_layer("teacher_counter").count.numpy()),
        float(distiller.student.get_layer("student_counter").count.numpy()),
    )


# -- one teacher call and one student call per step ---------------------


def test_one_teacher_and_one_student_call_per_step():
    x, y = data(48)
    distiller = make(counter=True)
    distiller.compile("adam", sparse_ce(), metrics=["accuracy"])
    distiller.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert counts(distiller) == (12.0, 12.0)  # 6 steps x 2 epochs
    distiller.evaluate(x, y, batch_size=8, verbose=0)
    teacher_calls, student_calls = counts(distiller)
    assert teacher_calls == 12.0  # evaluate() never runs the teacher
    assert student_calls == 18.0


@needs_keras_distillation
def test_feature_loss_still_runs_each_model_once():
    x, y = data(32)
    teacher = mlp(16, "teacher", counter=True, seed=1)
    student = mlp(16, "student", counter=True, seed=2)
    distiller = Distiller(
        teacher,
        student,
        distillation_losses=[
            "kd",
            keras.distillation.FeatureDistillation(
                teacher_layer_name="teacher_h", student_layer_name="student_h"
            ),
        ],
        distillation_loss_weights=[1.0, 0.5],
    )
    distiller.compile("adam", sparse_ce())
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert counts(distiller) == (4.0, 4.0)


def test_evaluate_distillation_runs_the_teacher_when_asked():
    x, y = data(16)
    distiller = make(counter=True)
    distiller.compile("sgd", sparse_ce(), evaluate_distillation=True)
    logs = distiller.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    assert counts(distiller) == (1.0, 1.0)
    t_logits = distiller.teacher.predict(x, verbose=0)
    s_logits = distiller.student.predict(x, verbose=0)
    np.testing.assert_allclose(
        logs["distillation_loss"], np_kd(t_logits, s_logits, 4.0), rtol=1e-5
    )
    ce = keras.ops.convert_to_numpy(sparse_ce()(y, s_logits))
    np.testing.assert_allclose(logs["student_loss"], ce, rtol=1e-5)
    np.testing.assert_allclose(
        logs["loss"], 0.5 * ce + 0.5 * logs["distillation_loss"], rtol=1e-5
    )


# -- the teacher is never modified -----------------------------------------


def test_teacher_weights_and_batchnorm_statistics_are_unchanged():
    x, y = data(64)
    teacher = mlp(16, "teacher", batchnorm=True, seed=1)
    student = mlp(8, "student", batchnorm=True, seed=2)
    before = [w.copy() for w in teacher.get_weights()]
    student_before = [w.copy() for w in student.get_weights()]
    distiller = Distiller(teacher, student)
    distiller.compile("adam", sparse_ce())
    distiller.fit(x, y, batch_size=16, epochs=2, verbose=0)
    after = teacher.get_weights()
    assert len(before) == len(after) == 8
    for old, new in zip(before, after):
        np.testing.assert_array_equal(old, new)
    # The student did train (BatchNorm statistics included).
    moved = [
        not np.array_equal(a, b)
        for a, b in zip(student_before, student.get_weights())
    ]
    assert all(moved)
    # The user's teacher object keeps its trainable flag.
    assert teacher.trainable is True
    assert {id(w) for w in distiller.trainable_weights} == {
        id(w) for w in student.trainable_weights
    }


def _student_sharing(teacher, unbuilt=False):
    """A student that reuses the teacher's hidden Dense layer object."""
    shared = teacher.get_layer("teacher_h")
    if unbuilt:
        return keras.Sequential(
            [shared, keras.layers.Dense(NUM_CLASSES)], name="sharing"
        )
    inputs = keras.Input((NUM_FEATURES,))
    outputs = keras.layers.Dense(NUM_CLASSES, name="own")(shared(inputs))
    return keras.Model(inputs, outputs, name="sharing")


@pytest.mark.parametrize("unbuilt", [False, True])
def test_a_student_sharing_a_teacher_layer_is_refused(unbuilt):
    teacher = mlp(16, "teacher", seed=1)
    student = _student_sharing(teacher, unbuilt)
    with pytest.raises(ValueError, match=r"sharing the layers \['teacher_h'\]"):
        Distiller(teacher, student)
    if not unbuilt:
        with pytest.raises(ValueError, match="teacher_h/kernel"):
            Distiller(teacher, student)


def test_a_layer_shared_by_unbuilt_models_is_refused_once_built():
    x, y = data(16)
    shared = keras.layers.Dense(8, activation="relu", name="shared")
    teacher = keras.Sequential([shared, keras.layers.Dense(NUM_CLASSES)])
    student = keras.Sequential([shared, keras.layers.Dense(NUM_CLASSES)])
    distiller = Distiller(teacher, student)  # nothing has weights yet
    distiller.compile("sgd", sparse_ce())
    with pytest.raises(ValueError, match=r"sharing the layers \['shared'\]"):
        distiller.fit(x, y, epochs=1, verbose=0)


def test_shared_layers_train_with_the_student_when_allowed():
    x, y = data(32)
    teacher = mlp(16, "teacher", seed=1)
    student = _student_sharing(teacher)
    kernel = teacher.get_layer("teacher_h").kernel
    before = [w.copy() for w in teacher.get_weights()]
    distiller = Distiller(teacher, student, allow_shared_layers=True)
    assert distiller.get_config()["allow_shared_layers"] is True
    distiller.compile(keras.optimizers.SGD(0.1), sparse_ce())
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert any(w is kernel for w in distiller.trainable_weights)
    after = teacher.get_weights()
    assert not np.array_equal(before[0], after[0])  # the shared kernel moved
    np.testing.assert_array_equal(before[2], after[2])  # the teacher's own


# -- sample_weight and class_weight -----------------------------------------


def _twins():
    student = mlp(4, "student", seed=2)
    plain = copy_model(student)
    distiller = Distiller(mlp(16, "teacher", seed=1), student, None, None, 1.0)
    distiller.compile(keras.optimizers.SGD(0.1), sparse_ce())
    plain.compile(keras.optimizers.SGD(0.1), sparse_ce())
    return distiller, plain


def test_sample_weight_is_applied_like_a_plain_student():
    x, y = data(16)
    weights = np.linspace(0.1, 2.0, 16).astype("float32")
    distiller, plain = _twins()
    ours = distiller.train_on_batch(
        x, y, sample_weight=weights, return_dict=True
    )["loss"]
    theirs = plain.train_on_batch(x, y, sample_weight=weights)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    for a, b in zip(distiller.student.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    unweighted = keras.ops.convert_to_numpy(
        sparse_ce()(y, plain.predict(x, verbose=0))
    )
    assert not np.isclose(ours, unweighted)


def test_class_weight_is_applied_like_a_plain_student():
    x, y = data(32)
    class_weight = {0: 0.2, 1: 1.0, 2: 3.0}
    distiller, plain = _twins()
    kwargs = dict(batch_size=32, epochs=2, verbose=0, shuffle=False)
    ours = distiller.fit(x, y, class_weight=class_weight, **kwargs)
    theirs = plain.fit(x, y, class_weight=class_weight, **kwargs)
    np.testing.assert_allclose(
        ours.history["loss"], theirs.history["loss"], rtol=1e-6
    )
    for a, b in zip(distiller.student.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


# -- variables change without recompiling -----------------------------------


class SetTemperature(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            self.model.temperature = 10.0
            self.model.student_loss_weight = 0.25


def test_callback_changes_temperature_between_epochs():
    x, y = data(24)
    distiller = make(alpha=0.5)
    distiller.temperature = 1.0
    distiller.compile(keras.optimizers.SGD(0.0), sparse_ce())
    t_logits = distiller.teacher.predict(x, verbose=0)
    s_logits = distiller.student.predict(x, verbose=0)
    history = distiller.fit(
        x, y, batch_size=24, epochs=2, verbose=0, callbacks=[SetTemperature()]
    )
    got = history.history["distillation_loss"]
    np.testing.assert_allclose(got[0], np_kd(t_logits, s_logits, 1.0), 1e-5)
    np.testing.assert_allclose(got[1], np_kd(t_logits, s_logits, 10.0), 1e-5)
    ce = history.history["student_loss"][1]
    np.testing.assert_allclose(
        history.history["loss"][1], 0.25 * ce + 0.75 * got[1], rtol=1e-5
    )
    assert distiller.temperature == 10.0
    assert distiller.distillation_losses[0].temperature == 10.0


def test_loss_weights_are_variables():
    distiller = make(distillation_losses=["kd", "soft_target"])
    distiller.distillation_loss_weights = [0.25, 2.0]
    assert distiller.distillation_loss_weights == [0.25, 2.0]
    names = {v.path.split("/")[-1] for v in distiller.non_trainable_weights}
    assert "student_loss_weight" in names


# -- saving ------------------------------------------------------------------


def test_save_load_round_trip_and_continue_training(tmp_path):
    x, y = data(32)
    distiller = make(alpha=0.3)
    distiller.temperature = 2.5
    distiller.compile(
        keras.optimizers.Adam(1e-2),
        sparse_ce(),
        metrics=["accuracy"],
        evaluate_distillation=True,
    )
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = str(tmp_path / "distiller.keras")
    distiller.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, Distiller)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), distiller.predict(x, verbose=0)
    )
    assert loaded.temperature == 2.5
    assert loaded.student_loss_weight == 0.3
    assert loaded.optimizer.iterations.numpy() == 4
    assert loaded._evaluate_distillation is True
    # Both continue identically.
    a = distiller.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    b = loaded.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    np.testing.assert_allclose(a.history["loss"], b.history["loss"], 1e-5)
    for w1, w2 in zip(
        distiller.student.get_weights(), loaded.student.get_weights()
    ):
        np.testing.assert_allclose(w1, w2, rtol=1e-5, atol=1e-6)


def test_student_saved_alone_holds_no_teacher_weights(tmp_path):
    distiller = make()
    distiller.compile("adam", sparse_ce())
    path = str(tmp_path / "student.keras")
    distiller.student.save(path)
    student = keras.models.load_model(path)
    assert len(student.weights) == len(distiller.student.weights)
    assert not any("teacher" in w.path for w in student.weights)
    teacher_path = str(tmp_path / "teacher.keras")
    distiller.teacher.save(teacher_path)
    assert os.path.getsize(path) < os.path.getsize(teacher_path)


def test_predict_is_the_student():
    x, _ = data(20)
    distiller = make()
    np.testing.assert_array_equal(
        distiller.predict(x, verbose=0), distiller.student.predict(x, verbose=0)
    )


def test_get_config_round_trip():
    distiller = make(
        alpha=0.2,
        distillation_losses=[
            losses.LogitsDistillation(3.0),
            losses.SoftTargetDistillation("categorical_crossentropy", 2.0),
        ],
        distillation_loss_weights=[1.0, 0.5],
    )
    config = distiller.get_config()
    restored = Distiller.from_config(config)
    assert restored.get_config() == config
    assert [type(x) for x in restored.distillation_losses] == [
        losses.LogitsDistillation,
        losses.SoftTargetDistillation,
    ]


def test_built_on_construction_so_backup_and_restore_works(tmp_path):
    x, y = data(16)
    distiller = make()
    assert distiller.built
    distiller.compile("adam", sparse_ce())
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    distiller.fit(x, y, epochs=1, verbose=0, callbacks=[backup])


# -- compatibility -----------------------------------------------------------


def test_keras_io_style_compile():
    x, y = data(32)
    teacher = mlp(16, "teacher", seed=1)
    student = mlp(4, "student", seed=2)
    distiller = Distiller(student=student, teacher=teacher)
    distiller.compile(
        optimizer=keras.optimizers.Adam(),
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
        student_loss_fn=sparse_ce(),
        distillation_loss_fn=keras.losses.KLDivergence(),
        alpha=0.1,
        temperature=10,
    )
    assert distiller.student_loss_weight == 0.1
    assert type(distiller.distillation_losses[0]) is losses.LogitsDistillation
    assert distiller.temperature == 10.0
    history = distiller.fit(x, y, epochs=2, verbose=0)
    assert history.history["loss"][1] < history.history["loss"][0]
    logs = distiller.evaluate(x, y, verbose=0, return_dict=True)
    assert set(logs) == {
        "loss",
        "total_loss",
        "student_loss",
        "sparse_categorical_accuracy",
    }


def test_keras_io_style_other_probability_loss():
    distiller = make()
    distiller.compile(
        "adam",
        student_loss_fn=sparse_ce(),
        distillation_loss_fn=keras.losses.CategoricalCrossentropy(),
        temperature=3,
    )
    (loss,) = distiller.distillation_losses
    assert isinstance(loss, losses.SoftTargetDistillation)
    assert loss.temperature == 3.0


@needs_keras_distillation
def test_keras_distillation_style_constructor():
    x, y = data(32)
    distiller = Distiller(
        teacher=mlp(16, "teacher", seed=1),
        student=mlp(4, "student", seed=2),
        distillation_losses=keras.distillation.LogitsDistillation(
            temperature=3.0
        ),
        distillation_loss_weights=[1.0],
        student_loss_weight=0.5,
    )
    (loss,) = distiller.distillation_losses
    assert type(loss) is losses.LogitsDistillation
    assert loss.temperature == 3.0
    distiller.compile("adam", "sparse_categorical_crossentropy")
    history = distiller.fit(x, y, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert "loss" in distiller.evaluate(x, y, verbose=0, return_dict=True)


@needs_keras_distillation
def test_keras_feature_distillation_value():
    x, y = data(16)
    teacher = mlp(16, "teacher", seed=1)
    student = mlp(16, "student", seed=2)
    distiller = Distiller(
        teacher,
        student,
        keras.distillation.FeatureDistillation(
            "mse",
            teacher_layer_name="teacher_h",
            student_layer_name="student_h",
        ),
    )
    distiller.compile("sgd", sparse_ce(), evaluate_distillation=True)
    logs = distiller.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    t_h = keras.Model(teacher.input, teacher.get_layer("teacher_h").output)
    s_h = keras.Model(student.input, student.get_layer("student_h").output)
    expected = np.mean(
        (t_h.predict(x, verbose=0) - s_h.predict(x, verbose=0)) ** 2
    )
    np.testing.assert_allclose(logs["distillation_loss"], expected, rtol=1e-5)


# -- inputs ------------------------------------------------------------------


def test_numpy_and_tf_data_inputs():
    x, y = data(32)
    distiller = make()
    distiller.compile("adam", sparse_ce(), metrics=["accuracy"])
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    h1 = distiller.fit(
        ds, epochs=1, verbose=0, validation_data=ds, shuffle=False
    )
    h2 = distiller.fit(x, y, epochs=1, verbose=0, validation_data=(x, y))
    for history in (h1, h2):
        assert set(history.history) == {
            "loss",
            "total_loss",
            "student_loss",
            "distillation_loss",
            "accuracy",
            "val_loss",
            "val_total_loss",
            "val_student_loss",
            "val_accuracy",
        }
    a = distiller.evaluate(ds, verbose=0)
    b = distiller.evaluate(x, y, batch_size=8, verbose=0)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(
        distiller.predict(ds, verbose=0),
        distiller.predict(x, verbose=0),
        atol=1e-6,
    )


class SubclassedStudent(keras.Model):
    def __init__(self, classes=NUM_CLASSES, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(5, activation="relu")
        self.out = keras.layers.Dense(classes)

    def call(self, inputs):
        return self.out(self.hidden(inputs))


def test_subclassed_student():
    x, y = data(32)
    student = SubclassedStudent()
    student(x[:1])
    distiller = Distiller(mlp(16, "teacher", seed=1), student)
    distiller.compile("adam", sparse_ce())
    before = [w.copy() for w in student.get_weights()]
    history = distiller.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert np.isfinite(history.history["distillation_loss"]).all()
    assert not np.array_equal(before[0], student.get_weights()[0])
    np.testing.assert_allclose(
        distiller.predict(x, verbose=0), student.predict(x, verbose=0)
    )


def test_distillation_without_labels():
    x, _ = data(32)
    distiller = make(alpha=0.0)
    distiller.compile("adam")
    history = distiller.fit(x, batch_size=8, epochs=2, verbose=0)
    assert history.history["student_loss"] == [0.0, 0.0]
    loss = history.history["distillation_loss"]
    assert loss[1] < loss[0]


def test_mixed_precision_uses_loss_scaling_and_float32_losses():
    x, y = data(16)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        distiller = make()
        distiller.compile("adam", sparse_ce())
        assert isinstance(
            distiller.optimizer, keras.optimizers.LossScaleOptimizer
        )
        history = distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert np.isfinite(history.history["loss"]).all()
    assert distiller._student_loss_weight.dtype == "float32"


# -- errors ------------------------------------------------------------------


def _models():
    return mlp(16, "teacher", seed=1), mlp(4, "student", seed=2)


@pytest.mark.parametrize("bad", [0, -2.0, "hot"])
def test_error_non_positive_temperature(bad):
    distiller = make()
    with pytest.raises(ValueError, match="argument `temperature`. Expected"):
        distiller.temperature = bad
    with pytest.raises(ValueError, match="argument `temperature`. Expected"):
        distiller.compile("adam", sparse_ce(), temperature=bad)


@pytest.mark.parametrize("bad", [-0.1, 1.5, "half", None])
def test_error_student_loss_weight_outside_unit_interval(bad):
    teacher, student = _models()
    with pytest.raises(
        ValueError, match=r"`student_loss_weight`. Expected a float in \[0, 1\]"
    ):
        Distiller(teacher, student, student_loss_weight=bad)


def test_error_alpha_outside_unit_interval_in_compile():
    distiller = make()
    with pytest.raises(ValueError, match="Received: student_loss_weight=2"):
        distiller.compile("adam", sparse_ce(), alpha=2)


@pytest.mark.parametrize("bad", [[-1.0], [1.0, 2.0], ["a"], [float("inf")]])
def test_error_bad_distillation_loss_weights(bad):
    teacher, student = _models()
    with pytest.raises(ValueError, match="`distillation_loss_weights`"):
        Distiller(teacher, student, "kd", distillation_loss_weights=bad)


@pytest.mark.parametrize("role", ["teacher", "student"])
def test_error_not_a_keras_model(role):
    teacher, student = _models()
    kwargs = {"teacher": teacher, "student": student, role: "model.keras"}
    with pytest.raises(ValueError, match=f"`{role}`. Expected a `keras.Model`"):
        Distiller(**kwargs)


def test_unbuilt_subclassed_student_is_built_on_the_first_batch():
    teacher, _ = _models()
    student = SubclassedStudent(name="lazy")
    distiller = Distiller(teacher, student)
    assert not distiller.built and not student.built
    distiller.compile("adam", sparse_ce())
    x, y = data(16)
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert student.built and distiller.built
    np.testing.assert_allclose(
        distiller.predict(x, verbose=0), student.predict(x, verbose=0)
    )


def test_error_same_teacher_and_student():
    teacher, _ = _models()
    with pytest.raises(ValueError, match="same object as teacher and student"):
        Distiller(teacher, teacher)


def test_error_class_count_mismatch():
    teacher, _ = _models()
    inputs = keras.Input((NUM_FEATURES,))
    student = keras.Model(inputs, keras.layers.Dense(NUM_CLASSES + 2)(inputs))
    with pytest.raises(
        ValueError, match="teacher classes=3, student classes=5"
    ):
        Distiller(teacher, student)


def test_error_class_count_mismatch_subclassed_student():
    teacher, _ = _models()

    student = SubclassedStudent(classes=7)
    student(np.zeros((1, NUM_FEATURES), "float32"))
    with pytest.raises(ValueError, match="student classes=7"):
        Distiller(teacher, student)


def test_error_labels_missing():
    x, _ = data(16)
    distiller = make(alpha=0.5)
    distiller.compile("adam", sparse_ce())
    with pytest.raises(ValueError, match="Expected \\(x, y\\)"):
        distiller.fit(x, epochs=1, verbose=0)


def test_error_loss_missing_while_alpha_positive():
    distiller = make(alpha=0.5)
    with pytest.raises(ValueError, match="Received: loss=None"):
        distiller.compile("adam")


def test_error_loss_and_student_loss_fn():
    distiller = make()
    with pytest.raises(ValueError, match="not both"):
        distiller.compile("adam", loss="mse", student_loss_fn="mse")


def test_error_unknown_loss_name_lists_known_names():
    teacher, student = _models()
    with pytest.raises(ValueError, match=r"names \[.*'kd'.*Received.*'fitnet'"):
        Distiller(teacher, student, "fitnet")


def test_error_empty_loss_list():
    teacher, student = _models()
    with pytest.raises(ValueError, match="at least one distillation loss"):
        Distiller(teacher, student, [])


def test_error_feature_layer_not_found():
    teacher, student = _models()
    with pytest.raises(ValueError, match="layer name for the teacher.*'nope'"):
        Distiller(teacher, student, _NamedLoss())


class _NamedLoss(losses.DistillationLoss):
    teacher_layer = "nope"

    def compute(self, teacher_outputs, student_outputs, y_true=None):
        return keras.ops.mean(teacher_outputs)


def test_error_other_backend(monkeypatch):
    teacher, student = _models()
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(RuntimeError, match="TensorFlow backend only"):
        Distiller(teacher, student)


def test_public_objects_have_docstrings():
    assert keras_distill.Distiller.__doc__
    for name in ("compile", "compute_loss", "get_config", "from_config"):
        assert getattr(Distiller, name).__doc__, name


def test_jit_compile_matches_the_traced_step():
    x, y = data(32)
    weights = []
    for jit in (False, True):
        keras.utils.set_random_seed(0)
        distiller = make(alpha=0.3)
        distiller.compile(
            keras.optimizers.SGD(0.1), sparse_ce(), jit_compile=jit
        )
        assert distiller.jit_compile is jit
        distiller.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
        weights.append(distiller.student.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_mixed_bfloat16_keeps_the_losses_in_float32():
    x, y = data(16)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        distiller = make()
        distiller.compile("adam", sparse_ce())
        history = distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
        teacher_out = distiller._teacher_outputs(x)
        student_out = distiller._student_view(x, training=False)
        assert student_out["__output__"].dtype == "bfloat16"
        value = objective.distillation_loss(
            distiller.distillation_losses,
            distiller._weight_variables,
            teacher_out,
            student_out,
            None,
            None,
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert value.dtype == "float32"
    assert np.isfinite(history.history["loss"]).all()
    t = keras.ops.convert_to_numpy(
        keras.ops.cast(teacher_out["__output__"], "float32")
    )
    s = keras.ops.convert_to_numpy(
        keras.ops.cast(student_out["__output__"], "float32")
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(value), np_kd(t, s, 4.0), rtol=1e-5
    )


def test_total_loss_is_logged_beside_loss():
    x, y = data(16)
    distiller = make()
    distiller.compile("adam", sparse_ce())
    history = distiller.fit(
        x, y, batch_size=8, epochs=2, verbose=0, validation_data=(x, y)
    ).history
    assert history["total_loss"] == history["loss"]
    assert history["val_total_loss"] == history["val_loss"]


def test_tensorboard_callback_logs_an_epoch(tmp_path):
    x, y = data(16)
    distiller = make()
    distiller.compile("adam", sparse_ce())
    distiller.fit(
        x,
        y,
        batch_size=8,
        epochs=1,
        verbose=0,
        callbacks=[keras.callbacks.TensorBoard(str(tmp_path / "logs"))],
    )
    events = [
        name
        for _, _, files in os.walk(tmp_path / "logs")
        for name in files
        if name.startswith("events.out.tfevents")
    ]
    assert events
