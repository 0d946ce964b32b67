"""The compatibility subset: what must work on every supported version.

`.ci/run` runs this file (with `tests/test_keras_internals.py`) on the
oldest supported TensorFlow and Keras as well as on the current ones:
training against a NumPy reference of the objective, a feature loss
(which replays the models' graphs through Keras' private
`_run_through_graph`), saving and loading, a TFLite export, and the
optional `keras.distillation` layer. Tiny models, a few steps each.
"""

import keras
import numpy as np
import pytest
from conftest import data
from conftest import mlp
from conftest import np_ce
from conftest import np_kd
from conftest import sparse_ce

import keras_distill
from keras_distill import Distiller
from keras_distill import losses
from keras_distill.losses import compat

pytestmark = pytest.mark.compat

HAS_KERAS_DISTILLATION = compat.keras_distillation() is not None
NEEDS_KERAS_DISTILLATION = pytest.mark.skipif(
    not HAS_KERAS_DISTILLATION,
    reason=(
        f"keras.distillation was added in Keras "
        f"{compat.KERAS_DISTILLATION_VERSION}; this is Keras "
        f"{keras.version()}"
    ),
)


def outputs_of(model, layer_name, x):
    """The output of `model`'s layer `layer_name` on `x`, in NumPy."""
    probe = keras.Model(model.input, model.get_layer(layer_name).output)
    return probe.predict(x, verbose=0).astype("float64")


def weights_of(model):
    return [np.array(w) for w in model.get_weights()]


def test_distiller_trains_and_its_loss_matches_numpy():
    x, y = data(32)
    teacher = mlp(16, "teacher", seed=1)
    student = mlp(4, "student", seed=2)
    alpha, temperature = 0.3, 2.0
    distiller = Distiller(
        teacher,
        student,
        losses.LogitsDistillation(temperature=temperature),
        student_loss_weight=alpha,
    )
    distiller.compile(keras.optimizers.SGD(0.1), sparse_ce())
    teacher_before = weights_of(teacher)
    student_before = weights_of(student)
    history = distiller.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2
    for before, after in zip(teacher_before, weights_of(teacher)):
        np.testing.assert_array_equal(before, after)
    assert any(
        not np.allclose(before, after)
        for before, after in zip(student_before, weights_of(student))
    )
    # One more step: its logged loss is computed before the update, from
    # the weights the two models hold now. (Keras 3.8's `train_on_batch`
    # does not reset the metrics itself; later releases do.)
    t_logits = teacher.predict(x, verbose=0)
    s_logits = student.predict(x, verbose=0)
    ce = np_ce(s_logits, y).mean()
    kd = np_kd(t_logits, s_logits, temperature)
    distiller.reset_metrics()
    logs = distiller.train_on_batch(x, y, return_dict=True)
    np.testing.assert_allclose(logs["student_loss"], ce, rtol=1e-5)
    np.testing.assert_allclose(logs["distillation_loss"], kd, rtol=1e-5)
    np.testing.assert_allclose(
        logs["loss"], alpha * ce + (1 - alpha) * kd, rtol=1e-5
    )


def feature_distiller(adapter):
    """A distiller with KD and a hint from `teacher_h` to `student_h`."""
    hint = losses.FeatureDistillation(
        teacher_layer="teacher_h", student_layer="student_h", adapter=adapter
    )
    distiller = Distiller(
        mlp(16, "teacher", seed=1),
        mlp(8, "student", seed=2),
        [losses.LogitsDistillation(temperature=2.0), hint],
        distillation_loss_weights=[1.0, 0.5],
        student_loss_weight=0.0,
    )
    distiller.compile(keras.optimizers.SGD(0.05))
    return distiller


def np_feature_objective(distiller, adapter, x):
    """KD + 0.5 · MSE(teacher_h, adapter(student_h)), in NumPy."""
    teacher, student = distiller.teacher, distiller.student
    kernel, bias = (np.array(w, "float64") for w in adapter.get_weights())
    mapped = outputs_of(student, "student_h", x) @ kernel + bias
    mse = ((outputs_of(teacher, "teacher_h", x) - mapped) ** 2).mean()
    kd = np_kd(
        teacher.predict(x, verbose=0), student.predict(x, verbose=0), 2.0
    )
    return kd + 0.5 * mse


def test_feature_distillation_between_named_layers_trains():
    x, y = data(32)
    adapter = keras.layers.Dense(16, name="adapter")
    distiller = feature_distiller(adapter)
    first = distiller.train_on_batch(x, y, return_dict=True)["loss"]
    distiller.fit(x, y, batch_size=8, epochs=3, verbose=0)
    expected = np_feature_objective(distiller, adapter, x)
    distiller.reset_metrics()
    logs = distiller.train_on_batch(x, y, return_dict=True)
    np.testing.assert_allclose(logs["loss"], expected, rtol=1e-5)
    # The adapter is trained with the student, and the objective fell.
    assert any("adapter" in w.path for w in distiller.trainable_weights)
    assert logs["loss"] < first


def test_save_and_load_round_trip(tmp_path):
    x, y = data(16)
    adapter = keras.layers.Dense(16, name="adapter")
    distiller = feature_distiller(adapter)
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = tmp_path / "distiller.keras"
    distiller.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is Distiller
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), distiller.predict(x, verbose=0), atol=1e-6
    )
    # The teacher and the adapter came back too: the same objective, and
    # the NumPy reference of it, on the loaded distiller.
    loaded_adapter = loaded.distillation_losses[1].layers[0]
    expected = np_feature_objective(loaded, loaded_adapter, x)
    loaded.reset_metrics()
    np.testing.assert_allclose(
        loaded.train_on_batch(x, y, return_dict=True)["loss"],
        expected,
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        np_feature_objective(distiller, adapter, x), expected, rtol=1e-6
    )


def test_tflite_float32_export(tmp_path):
    pytest.importorskip(
        "ai_edge_litert",
        reason="the export check runs in LiteRT: keras-distill[export]",
    )
    x, _ = data(16)
    student = mlp(4, "student", seed=2)
    path = tmp_path / "student.tflite"
    report = keras_distill.export.tflite(
        student, path, check_data=x, latency_runs=2
    )
    assert path.is_file() and report.bytes == path.stat().st_size
    assert report.compared == 16 and report.max_abs_diff <= 1e-5
    runner = keras_distill.export.Runner(path)
    np.testing.assert_allclose(
        runner.predict(x), student.predict(x, verbose=0), atol=1e-5
    )


def test_keras_distillation_is_optional():
    # keras_distill imported above; on any Keras, our own losses are not
    # taken for Keras' and other objects are still refused by `get`.
    assert not compat.is_keras_distillation_loss(losses.LogitsDistillation())
    assert not compat.is_keras_distillation_loss("kd")
    with pytest.raises(ValueError, match="Received: distillation_losses=42"):
        losses.get(42)
    if HAS_KERAS_DISTILLATION:
        assert compat.is_keras_distillation_loss(
            keras.distillation.LogitsDistillation()
        )


@pytest.mark.skipif(
    HAS_KERAS_DISTILLATION,
    reason=f"this Keras ({keras.version()}) has keras.distillation",
)
def test_keras_distillation_features_name_the_keras_they_need():
    needed = (
        r"needs `keras.distillation`, added in Keras 3\.12\. Expected "
        rf"keras>=3\.12\. Received: keras=={keras.version()}"
    )
    with pytest.raises(ImportError, match="from_keras " + needed):
        losses.from_keras(losses.LogitsDistillation())
    with pytest.raises(ImportError, match="KerasDistillationLoss " + needed):
        losses.KerasDistillationLoss({"class_name": "FeatureDistillation"})


@NEEDS_KERAS_DISTILLATION
def test_keras_distillation_losses_are_accepted():
    x, y = data(16)
    feature = keras.distillation.FeatureDistillation(
        teacher_layer_name="teacher_h", student_layer_name="student_h"
    )
    distiller = Distiller(
        mlp(8, "teacher", seed=1),
        mlp(8, "student", seed=2),
        [keras.distillation.LogitsDistillation(temperature=2.0), feature],
        student_loss_weight=0.0,
    )
    assert type(distiller.distillation_losses[0]) is losses.LogitsDistillation
    assert isinstance(
        distiller.distillation_losses[1], losses.KerasDistillationLoss
    )
    distiller.compile("sgd")
    # The references come from the weights before the step's update, as
    # the step's logged loss does.
    teacher, student = distiller.teacher, distiller.student
    t_feature = outputs_of(teacher, "teacher_h", x)
    s_feature = outputs_of(student, "student_h", x)
    kd = np_kd(
        teacher.predict(x, verbose=0), student.predict(x, verbose=0), 2.0
    )
    distiller.reset_metrics()
    logs = distiller.train_on_batch(x, y, return_dict=True)
    np.testing.assert_allclose(
        logs["loss"], kd + ((t_feature - s_feature) ** 2).mean(), rtol=1e-5
    )
