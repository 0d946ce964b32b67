import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import needs_keras_distillation
from conftest import np_kd

import keras_distill
from keras_distill import losses

RNG = np.random.default_rng(7)
TEACHER = (RNG.normal(size=(5, 4)) * 3).astype("float32")
STUDENT = (RNG.normal(size=(5, 4)) * 2).astype("float32")


@pytest.mark.parametrize("temperature", [1.0, 4.0, 20.0])
def test_logits_distillation_matches_numpy(temperature):
    loss = losses.LogitsDistillation(temperature=temperature)
    value = keras.ops.convert_to_numpy(loss(TEACHER, STUDENT))
    np.testing.assert_allclose(
        value, np_kd(TEACHER, STUDENT, temperature), rtol=1e-6, atol=1e-6
    )


def test_logits_distillation_is_zero_for_identical_logits():
    loss = losses.LogitsDistillation(temperature=3.0)
    value = keras.ops.convert_to_numpy(loss(TEACHER, TEACHER))
    assert abs(value) < 1e-6


def test_logits_distillation_is_exact_for_confident_teacher():
    # A log of clipped probabilities would lose the tiny classes.
    teacher = np.array([[60.0, 0.0, -60.0]], "float32")
    student = np.array([[0.0, 1.0, 2.0]], "float32")
    loss = losses.LogitsDistillation(temperature=1.0)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loss(teacher, student)),
        np_kd(teacher, student, 1.0),
        rtol=1e-6,
    )


@pytest.mark.parametrize("temperature", [1.0, 4.0, 20.0])
def test_logits_distillation_gradient(temperature):
    loss = losses.LogitsDistillation(temperature=temperature)
    student = tf.Variable(STUDENT)
    with tf.GradientTape() as tape:
        value = loss(TEACHER, student)
    grad = tape.gradient(value, student).numpy()

    def softmax(z):
        z = z - z.max(axis=-1, keepdims=True)
        return np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)

    batch = STUDENT.shape[0]
    expected = (
        temperature
        * (
            softmax(STUDENT.astype("float64") / temperature)
            - softmax(TEACHER.astype("float64") / temperature)
        )
        / batch
    )
    np.testing.assert_allclose(grad, expected, atol=1e-6)
    # Central finite differences on the NumPy reference agree too.
    eps = 1e-4
    numeric = np.zeros_like(expected)
    for idx in np.ndindex(STUDENT.shape):
        plus = STUDENT.astype("float64").copy()
        minus = plus.copy()
        plus[idx] += eps
        minus[idx] -= eps
        numeric[idx] = (
            np_kd(TEACHER, plus, temperature)
            - np_kd(TEACHER, minus, temperature)
        ) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, atol=1e-5)


def test_logits_distillation_float16_inputs_give_float32():
    loss = losses.LogitsDistillation(temperature=2.0)
    value = loss(TEACHER.astype("float16"), STUDENT.astype("float16"))
    assert keras.backend.standardize_dtype(value.dtype) == "float32"
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(value),
        np_kd(TEACHER.astype("float16"), STUDENT.astype("float16"), 2.0),
        rtol=1e-5,
    )


def test_soft_target_with_kl_equals_logits_distillation():
    soft = losses.SoftTargetDistillation("kl_divergence", temperature=4.0)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(soft(TEACHER, STUDENT)),
        np_kd(TEACHER, STUDENT, 4.0),
        rtol=1e-4,
    )


def test_soft_target_with_crossentropy_matches_numpy():
    soft = losses.SoftTargetDistillation(
        "categorical_crossentropy", temperature=2.0
    )
    log_pt = TEACHER.astype("float64") / 2.0
    log_pt = log_pt - np.log(np.exp(log_pt).sum(-1, keepdims=True))
    log_ps = STUDENT.astype("float64") / 2.0
    log_ps = log_ps - np.log(np.exp(log_ps).sum(-1, keepdims=True))
    expected = 4.0 * (-(np.exp(log_pt) * log_ps).sum(-1)).mean()
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(soft(TEACHER, STUDENT)), expected, rtol=1e-5
    )


@pytest.mark.parametrize("bad", [0, -1.0, "4", None, float("nan"), True])
def test_temperature_must_be_positive(bad):
    with pytest.raises(ValueError, match="argument `temperature`.*Received"):
        losses.LogitsDistillation(temperature=bad)


def test_registry_resolves_names():
    assert isinstance(losses.get("kd"), losses.LogitsDistillation)
    assert isinstance(losses.get("KD"), losses.LogitsDistillation)
    assert isinstance(losses.get("soft_target"), losses.SoftTargetDistillation)
    assert "kd" in losses.known_names()


def test_registry_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match=r"registered loss names \[.*'kd'"):
        losses.get("no_such_loss")


def test_registry_rejects_other_types():
    with pytest.raises(ValueError, match="Received: distillation_losses=42"):
        losses.get(42)


@needs_keras_distillation
def test_keras_logits_distillation_becomes_ours():
    ours = losses.get(keras.distillation.LogitsDistillation(temperature=3.0))
    assert type(ours) is losses.LogitsDistillation
    assert ours.temperature == 3.0


@needs_keras_distillation
def test_keras_feature_distillation_is_wrapped():
    keras_loss = keras.distillation.FeatureDistillation(
        loss="mse", teacher_layer_name="a", student_layer_name="b"
    )
    ours = losses.get(keras_loss)
    assert isinstance(ours, losses.KerasDistillationLoss)
    assert (ours.teacher_layer, ours.student_layer) == ("a", "b")
    value = ours(np.ones((2, 3)), np.zeros((2, 3)))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(value), 1.0)


@needs_keras_distillation
def test_wrapper_rejects_non_keras_losses():
    with pytest.raises(ValueError, match="Expected a `keras.distillation"):
        losses.KerasDistillationLoss(loss="mse")


@pytest.mark.parametrize(
    "loss",
    [
        losses.LogitsDistillation(temperature=2.5, name="kd_a"),
        losses.SoftTargetDistillation("categorical_crossentropy", 3.0),
    ],
)
def test_get_config_round_trip(loss):
    config = keras.saving.serialize_keras_object(loss)
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is type(loss)
    assert restored.get_config() == loss.get_config()
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(restored(TEACHER, STUDENT)),
        keras.ops.convert_to_numpy(loss(TEACHER, STUDENT)),
    )


@needs_keras_distillation
def test_from_config_of_wrapped_keras_loss():
    ours = losses.KerasDistillationLoss(
        keras.distillation.FeatureDistillation(loss="mae")
    )
    restored = losses.KerasDistillationLoss.from_config(ours.get_config())
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(restored(TEACHER, STUDENT)),
        np.abs(TEACHER - STUDENT).mean(),
        rtol=1e-6,
    )


def test_custom_loss_subclass_gets_default_config():
    class Scaled(losses.DistillationLoss):
        def __init__(self, scale=2.0, name=None):
            super().__init__(name=name)
            self.scale = scale

        def compute(self, teacher_outputs, student_outputs, y_true=None):
            return keras.ops.mean(teacher_outputs - student_outputs) * 2

    loss = Scaled(scale=3.0)
    assert loss.get_config() == {"scale": 3.0, "name": "scaled"}
    assert Scaled.from_config(loss.get_config()).scale == 3.0


def test_public_names_are_exported():
    assert set(keras_distill.__all__) >= {"Distiller", "losses"}
    for name in losses.__all__:
        assert getattr(losses, name).__doc__, name


def _np_soft_crossentropy(t, s, temperature):
    log_pt = t.astype("float64") / temperature
    log_pt = log_pt - np.log(np.exp(log_pt).sum(-1, keepdims=True))
    log_ps = s.astype("float64") / temperature
    log_ps = log_ps - np.log(np.exp(log_ps).sum(-1, keepdims=True))
    return temperature**2 * (-(np.exp(log_pt) * log_ps).sum(-1)).mean()


def test_logits_distillation_takes_keras_loss_keyword():
    value = keras.ops.convert_to_numpy
    for kl in ("kl_divergence", keras.losses.KLDivergence(), None):
        loss = losses.LogitsDistillation(temperature=3.0, loss=kl)
        np.testing.assert_allclose(
            value(loss(TEACHER, STUDENT)),
            np_kd(TEACHER, STUDENT, 3.0),
            rtol=1e-5,
        )
    crossentropy = losses.LogitsDistillation(
        2.0, loss="categorical_crossentropy"
    )
    np.testing.assert_allclose(
        value(crossentropy(TEACHER, STUDENT)),
        _np_soft_crossentropy(TEACHER, STUDENT, 2.0),
        rtol=1e-5,
    )
    again = losses.LogitsDistillation.from_config(crossentropy.get_config())
    np.testing.assert_allclose(
        value(again(TEACHER, STUDENT)),
        value(crossentropy(TEACHER, STUDENT)),
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match="Expected one loss"):
        losses.LogitsDistillation(loss=["kl_divergence", None])


def test_feature_distillation_takes_keras_layer_name_keywords():
    keras_style = losses.FeatureDistillation(
        loss="mse", teacher_layer_name="t_h", student_layer_name="s_h"
    )
    assert (keras_style.teacher_layer, keras_style.student_layer) == (
        "t_h",
        "s_h",
    )
    assert keras_style.teacher_layer_name == "t_h"
    config = keras_style.get_config()
    assert "teacher_layer_name" not in config
    assert config["teacher_layer"] == "t_h"
    with pytest.raises(ValueError, match="not both"):
        losses.FeatureDistillation("a", teacher_layer_name="b")
    outputs = losses.FeatureDistillation(loss="mse")
    assert outputs.teacher_layer is None and outputs.student_layer is None


def test_validate_outputs_and_model_compatibility():
    loss = losses.LogitsDistillation()
    loss.validate_outputs(TEACHER, STUDENT)
    with pytest.raises(ValueError, match="same structure"):
        loss.validate_outputs(TEACHER, {"output": STUDENT})
    with pytest.raises(ValueError, match="same structure"):
        losses.FeatureDistillation().validate_outputs(
            TEACHER, [TEACHER, TEACHER]
        )
    loss.validate_model_compatibility(None, None)


def test_register_names_a_loss_and_makes_it_saveable():
    @losses.register("abs_logits_test", package="keras_distill_tests")
    class AbsLogits(losses.DistillationLoss):
        def compute(self, teacher_outputs, student_outputs, y_true=None):
            return keras.ops.mean(
                keras.ops.abs(teacher_outputs - student_outputs)
            )

    assert "abs_logits_test" in losses.known_names()
    loss = losses.get("abs_logits_test")
    assert type(loss) is AbsLogits
    config = keras.saving.serialize_keras_object(loss)
    assert config["registered_name"] == "keras_distill_tests>AbsLogits"
    again = keras.saving.deserialize_keras_object(config)
    assert type(again) is AbsLogits
    t = np.array([[1.0, -2.0]], "float32")
    s = np.array([[0.5, 1.0]], "float32")
    np.testing.assert_allclose(
        float(again.compute(t, s)), np.mean(np.abs(t - s)), rtol=1e-6
    )


def test_register_refuses_bad_and_taken_names():
    with pytest.raises(ValueError, match="lower-case string. Received: 'KD'"):
        losses.register("KD")
    with pytest.raises(ValueError, match="the name of `LogitsDistillation`"):

        @losses.register("kd")
        class Other(losses.DistillationLoss):
            pass
