"""Logits from any head, chosen outputs and teacher preprocessing.

Every distillation loss below is compared with a NumPy T²·KL computed from
the models' true logits (a twin model with the same weights and no
softmax), never from the distiller's own numbers.
"""

import warnings

import keras
import numpy as np
import pytest
from conftest import NUM_CLASSES
from conftest import NUM_FEATURES
from conftest import data
from conftest import mlp
from conftest import np_kd
from conftest import sparse_ce

import keras_distill
from keras_distill import _graphs as graphs
from keras_distill import _views as views
from keras_distill.teachers import TeacherCache

T = 3.0


def head_mlp(name, head, seed=0, hidden=8, classes=NUM_CLASSES):
    """An MLP whose logits `z` end in `head`: none, dense, layer, act, op."""
    init = keras.initializers.GlorotUniform(seed=seed)
    inputs = keras.Input((NUM_FEATURES,))
    h = keras.layers.Dense(hidden, "relu", kernel_initializer=init)(inputs)
    activation = "softmax" if head == "dense" else None
    z = keras.layers.Dense(
        classes, activation, kernel_initializer=init, name=f"{name}_z"
    )(h)
    if head == "layer":
        z = keras.layers.Softmax()(z)
    elif head == "act":
        z = keras.layers.Activation("softmax")(z)
    elif head == "op":
        z = keras.ops.softmax(z)
    return keras.Model(inputs, z, name=name)


def twin_logits(model, name):
    """A logits twin: the same model with the head's softmax removed."""
    twin = head_mlp(
        name,
        "none",
        hidden=model.layers[1].units,
        classes=model.output.shape[-1],
    )
    twin.set_weights(model.get_weights())
    return twin


def reported_distillation(distiller, x, y, **kwargs):
    """`distillation_loss` as `evaluate` reports it, in one batch."""
    distiller.compile(
        "sgd",
        kwargs.pop("loss", sparse_ce()),
        evaluate_distillation=True,
    )
    logs = distiller.evaluate(
        x, y, batch_size=len(x), verbose=0, return_dict=True, **kwargs
    )
    return logs["distillation_loss"]


@pytest.mark.parametrize("head", ["dense", "layer", "act", "op"])
def test_softmax_teacher_distils_from_its_logits(head):
    x, y = data(32)
    teacher = head_mlp("teacher", head, seed=1)
    assert graphs.softmax_head(teacher) is not None
    student = mlp(4, "student", seed=2)
    distiller = keras_distill.Distiller(
        teacher, student, keras_distill.losses.LogitsDistillation(T)
    )
    expected = np_kd(twin_logits(teacher, "t")(x), student(x), T)
    got = reported_distillation(distiller, x, y)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # KD of softmax(p / T) would be far off: the test can fail.
    wrong = np_kd(np.asarray(teacher(x)), np.asarray(student(x)), T)
    assert abs(wrong - expected) > 1e-2


def test_softmax_student_distils_from_its_logits_and_predicts_probabilities():
    x, y = data(32)
    teacher = mlp(8, "teacher", seed=1)
    student = head_mlp("student", "dense", seed=2, hidden=4)
    distiller = keras_distill.Distiller(
        teacher, student, keras_distill.losses.LogitsDistillation(T)
    )
    student_logits = twin_logits(student, "s")(x)
    student_logits = np.asarray(student_logits)
    expected = np_kd(teacher(x), student_logits, T)
    got = reported_distillation(
        distiller,
        x,
        y,
        loss=keras.losses.SparseCategoricalCrossentropy(),
    )
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    probabilities = distiller.predict(x, verbose=0)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(
        probabilities, student.predict(x, verbose=0), atol=1e-6
    )


def test_training_from_a_softmax_teacher_equals_training_from_its_logits():
    x, y = data(48)
    teacher = head_mlp("teacher", "dense", seed=1)
    twin = twin_logits(teacher, "twin")
    weights = []
    for source in (teacher, twin):
        student = mlp(4, "student", seed=2)
        distiller = keras_distill.Distiller(
            source,
            student,
            keras_distill.losses.LogitsDistillation(T),
            student_loss_weight=0.2,
        )
        distiller.compile(keras.optimizers.SGD(0.1), sparse_ce())
        distiller.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        weights.append(student.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_keras_applications_teacher():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (8, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 4, 8)
    kwargs = dict(
        input_shape=(32, 32, 3),
        alpha=0.75,
        minimalistic=True,
        weights=None,
        classes=4,
        include_preprocessing=False,
    )
    teacher = keras.applications.MobileNetV3Small(**kwargs)
    twin = keras.applications.MobileNetV3Small(
        classifier_activation=None, **kwargs
    )
    twin.set_weights(teacher.get_weights())
    student = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(4, 3, strides=4, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(4, activation="softmax"),
        ]
    )
    s_twin = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(4, 3, strides=4, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(4),
        ]
    )
    s_twin.set_weights(student.get_weights())
    distiller = keras_distill.Distiller(
        teacher, student, keras_distill.losses.LogitsDistillation(T)
    )
    expected = np_kd(twin(x, training=False), s_twin(x), T)
    got = reported_distillation(
        distiller, x, y, loss=keras.losses.SparseCategoricalCrossentropy()
    )
    np.testing.assert_allclose(got, expected, rtol=1e-5)


class BlackBox(keras.Model):
    """A subclassed model: its head cannot be inspected."""

    def __init__(self, inner, transform, **kwargs):
        super().__init__(**kwargs)
        self.inner = inner
        self.transform = transform

    def call(self, x):
        z = self.inner(x)
        if self.transform == "probabilities":
            return keras.ops.softmax(z)
        if self.transform == "log_probabilities":
            return keras.ops.log_softmax(z)
        return z


@pytest.mark.parametrize("kind", ["probabilities", "log_probabilities"])
def test_declared_output_type_of_a_black_box_teacher(kind):
    x, y = data(32)
    inner = mlp(8, "inner", seed=1)
    teacher = BlackBox(inner, kind)
    teacher(x[:1])
    student = mlp(4, "student", seed=2)
    distiller = keras_distill.Distiller(
        teacher,
        student,
        keras_distill.losses.LogitsDistillation(T),
        teacher_output_type=kind,
    )
    expected = np_kd(inner(x), student(x), T)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = reported_distillation(distiller, x, y)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_undeclared_probabilities_warn_once():
    x, y = data(32)
    teacher = BlackBox(mlp(8, "inner", seed=1), "probabilities")
    teacher(x[:1])
    distiller = keras_distill.Distiller(teacher, mlp(4, "student", seed=2))
    distiller.compile("sgd", sparse_ce())
    with pytest.warns(UserWarning, match="teacher_output_type='probabilities'"):
        distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    with pytest.warns(UserWarning, match="look like probabilities"):
        TeacherCache(teacher, x, verbose=0)


def test_declared_logits_on_a_softmax_head_is_an_error():
    with pytest.raises(ValueError, match="ends in a softmax"):
        keras_distill.Distiller(
            head_mlp("teacher", "dense"),
            mlp(4, "student"),
            teacher_output_type="logits",
        )
    with pytest.raises(ValueError, match="Expected one of"):
        keras_distill.Distiller(
            mlp(8, "teacher"), mlp(4, "student"), teacher_output_type="prob"
        )


def test_teacher_cache_stores_a_softmax_teachers_logits():
    x, y = data(32)
    teacher = head_mlp("teacher", "layer", seed=1)
    cache = TeacherCache(teacher, x, batch_size=8, verbose=0)
    np.testing.assert_allclose(
        cache.outputs[0], twin_logits(teacher, "t")(x), atol=1e-5
    )


def two_head_student(name="student", box=1):
    inputs = keras.Input((NUM_FEATURES,))
    h = keras.layers.Dense(6, "relu")(inputs)
    cls = keras.layers.Dense(NUM_CLASSES, name="cls")(h)
    reg = keras.layers.Dense(box, name="box")(h)
    return keras.Model(inputs, [cls, reg], name=name)


def test_two_head_student_distils_the_chosen_head():
    x, y = data(32)
    boxes = np.random.default_rng(1).normal(size=(32, 1)).astype("float32")
    teacher = mlp(8, "teacher", seed=1)
    student = two_head_student()
    with pytest.raises(ValueError, match="0: 'cls', 1: 'box'"):
        keras_distill.Distiller(teacher, student)
    distiller = keras_distill.Distiller(
        teacher,
        student,
        keras_distill.losses.LogitsDistillation(T),
        student_output="cls",
    )
    distiller.compile(
        "sgd",
        loss={"cls": sparse_ce(), "box": "mse"},
        loss_weights={"cls": 1.0, "box": 0.5},
        evaluate_distillation=True,
    )
    logs = distiller.evaluate(
        x, {"cls": y, "box": boxes}, batch_size=32, verbose=0, return_dict=True
    )
    cls, box = student(x)
    np.testing.assert_allclose(
        logs["distillation_loss"], np_kd(teacher(x), cls, T), rtol=1e-5
    )
    ce = sparse_ce()(y, cls)
    mse = np.mean((np.asarray(box) - boxes) ** 2)
    np.testing.assert_allclose(
        logs["student_loss"], float(ce) + 0.5 * mse, rtol=1e-5
    )
    history = distiller.fit(
        x, {"cls": y, "box": boxes}, batch_size=8, epochs=1, verbose=0
    )
    assert np.isfinite(history.history["loss"]).all()
    with pytest.raises(ValueError, match="Received: student_output='nope'"):
        keras_distill.Distiller(teacher, student, student_output="nope")


def test_dict_output_teacher_chosen_by_key():
    x, y = data(32)
    inputs = keras.Input((NUM_FEATURES,))
    h = keras.layers.Dense(8, "relu")(inputs)
    teacher = keras.Model(
        inputs,
        {"logits": keras.layers.Dense(NUM_CLASSES)(h), "embedding": h},
        name="dict_teacher",
    )
    student = mlp(4, "student", seed=2)
    with pytest.raises(ValueError, match="'embedding'.*'logits'"):
        keras_distill.Distiller(teacher, student)
    distiller = keras_distill.Distiller(
        teacher,
        student,
        keras_distill.losses.LogitsDistillation(T),
        teacher_output="logits",
    )
    got = reported_distillation(distiller, x, y)
    np.testing.assert_allclose(
        got, np_kd(teacher(x)["logits"], student(x), T), rtol=1e-5
    )


class DictTeacher(keras.Model):
    """A subclassed teacher returning a dict, as a reloaded SavedModel."""

    def __init__(self, inner, **kwargs):
        super().__init__(**kwargs)
        self.inner = inner

    def call(self, x):
        return {"output_0": self.inner(x)}


def test_subclassed_dict_teacher():
    x, y = data(32)
    inner = mlp(8, "inner", seed=1)
    teacher = DictTeacher(inner)
    teacher(x[:1])
    student = mlp(4, "student", seed=2)
    distiller = keras_distill.Distiller(
        teacher,
        student,
        keras_distill.losses.LogitsDistillation(T),
        teacher_output="output_0",
    )
    got = reported_distillation(distiller, x, y)
    np.testing.assert_allclose(got, np_kd(inner(x), student(x), T), rtol=1e-5)


def image_pair():
    """A teacher on 16x16 in [-1, 1], a student on 8x8 in [0, 1]."""
    teacher = keras.Sequential(
        [
            keras.Input((16, 16, 1)),
            keras.layers.Conv2D(4, 3, activation="relu", name="t_conv"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(NUM_CLASSES, name="t_logits"),
        ],
        name="teacher",
    )
    student = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(2, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(NUM_CLASSES),
        ],
        name="student",
    )
    preprocessing = keras.Sequential(
        [keras.layers.Resizing(16, 16), keras.layers.Rescaling(2.0, -1.0)],
        name="to_teacher",
    )
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (24, 8, 8, 1)).astype("float32")
    y = rng.integers(0, NUM_CLASSES, 24)
    return teacher, student, preprocessing, x, y


def test_teacher_preprocessing(tmp_path):
    teacher, student, preprocessing, x, y = image_pair()
    with pytest.raises(ValueError, match="teacher_preprocessing="):
        keras_distill.Distiller(teacher, student)
    distiller = keras_distill.Distiller(
        teacher,
        student,
        keras_distill.losses.LogitsDistillation(T),
        teacher_preprocessing=preprocessing,
    )
    t_in = np.asarray(keras.layers.Resizing(16, 16)(x)) * 2.0 - 1.0
    expected = np_kd(teacher(t_in), student(x), T)
    np.testing.assert_allclose(
        reported_distillation(distiller, x, y), expected, rtol=1e-5
    )
    before = [w.copy() for w in teacher.get_weights()]
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    for a, b in zip(before, teacher.get_weights()):
        np.testing.assert_array_equal(a, b)

    # The cache runs the same preprocessing.
    cache = TeacherCache(
        teacher, x, preprocessing=preprocessing, batch_size=8, verbose=0
    )
    np.testing.assert_allclose(cache.outputs[0], teacher(t_in), atol=1e-5)
    cached = distiller.evaluate(
        cache.dataset(x, y, batch_size=24, shuffle=False),
        verbose=0,
        return_dict=True,
    )
    online = distiller.evaluate(
        x, y, batch_size=24, verbose=0, return_dict=True
    )
    np.testing.assert_allclose(
        cached["distillation_loss"], online["distillation_loss"], rtol=1e-5
    )

    # Saved and reloaded, the preprocessing comes back with the teacher.
    path = str(tmp_path / "distiller.keras")
    distiller.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.teacher_preprocessing is not None
    again = loaded.evaluate(x, y, batch_size=24, verbose=0, return_dict=True)
    np.testing.assert_allclose(
        again["distillation_loss"], online["distillation_loss"], rtol=1e-5
    )


def test_unbuilt_sequential_pair_trains():
    x, y = data(32)
    teacher = keras.Sequential(
        [keras.layers.Dense(8, "relu"), keras.layers.Dense(NUM_CLASSES)]
    )
    student = keras.Sequential(
        [keras.layers.Dense(4, "relu"), keras.layers.Dense(NUM_CLASSES)]
    )
    distiller = keras_distill.Distiller(
        teacher, student, keras_distill.losses.LogitsDistillation(T)
    )
    distiller.compile("sgd", sparse_ce(), evaluate_distillation=True)
    logs = distiller.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    assert teacher.built and student.built
    np.testing.assert_allclose(
        logs["distillation_loss"], np_kd(teacher(x), student(x), T), rtol=1e-5
    )
    history = distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_dict_inputs_are_checked_per_key():
    a = keras.Input((4,), name="a")
    b = keras.Input((2,), name="b")
    h = keras.layers.Concatenate()([a, b])
    student = keras.Model(
        {"a": a, "b": b}, keras.layers.Dense(NUM_CLASSES)(h), name="s"
    )
    h2 = keras.layers.Concatenate()([a, b])
    teacher = keras.Model(
        {"a": a, "b": b}, keras.layers.Dense(NUM_CLASSES)(h2), name="t"
    )
    distiller = keras_distill.Distiller(teacher, student)
    distiller.compile("sgd", sparse_ce())
    x = {"a": np.zeros((8, 4), "float32"), "b": np.zeros((8, 3), "float32")}
    with pytest.raises(ValueError, match="input 'b'. Received: x\\['b'\\]"):
        distiller.fit(x, np.zeros(8, "int32"), verbose=0)
    import tensorflow as tf

    bad = tf.data.Dataset.from_tensor_slices((x, np.zeros(8, "int32")))
    with pytest.raises(ValueError, match="inputs 'b' have shape"):
        distiller.fit(bad.batch(4), verbose=0)
    x["b"] = np.zeros((8, 2), "float32")
    distiller.fit(x, np.zeros(8, "int32"), verbose=0)


def test_views_module_has_no_private_state_leak():
    """The head swap restores the layer: the model still gives softmax."""
    x, _ = data(8)
    teacher = head_mlp("teacher", "dense", seed=1)
    view = views.ModelView(teacher, "teacher")
    out = view(x)
    np.testing.assert_allclose(
        np.asarray(out[views.OUTPUT]), np.asarray(teacher(x)), atol=1e-6
    )
    np.testing.assert_allclose(
        np.asarray(out[views.LOGITS]),
        np.asarray(twin_logits(teacher, "t")(x)),
        atol=1e-5,
    )
    assert teacher.layers[-1].activation is keras.activations.softmax


def test_saved_softmax_distiller_reloads_with_its_heads(tmp_path):
    x, y = data(16)
    distiller = keras_distill.Distiller(
        head_mlp("teacher", "dense", seed=1),
        head_mlp("student", "layer", seed=2, hidden=4),
        keras_distill.losses.LogitsDistillation(T),
    )
    distiller.compile(
        "sgd",
        keras.losses.SparseCategoricalCrossentropy(),
        evaluate_distillation=True,
    )
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = str(tmp_path / "d.keras")
    distiller.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded._teacher_view.head is not None
    assert loaded._student_view.head is not None
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), distiller.predict(x, verbose=0), atol=1e-6
    )
    before = distiller.evaluate(x, y, verbose=0, return_dict=True)
    after = loaded.evaluate(x, y, verbose=0, return_dict=True)
    np.testing.assert_allclose(
        after["distillation_loss"], before["distillation_loss"], rtol=1e-6
    )


def test_tfsm_layer_teacher_warns_then_distils_when_declared(tmp_path):
    x, y = data(32)
    exported = head_mlp("exported", "dense", seed=1)
    exported.export(str(tmp_path / "saved"), verbose=False)
    inputs = keras.Input((NUM_FEATURES,))
    outputs = keras.layers.TFSMLayer(
        str(tmp_path / "saved"), call_endpoint="serve"
    )(inputs)
    teacher = keras.Model(inputs, outputs, name="reloaded")
    student = mlp(4, "student", seed=2)
    distiller = keras_distill.Distiller(teacher, student)
    distiller.compile("sgd", sparse_ce())
    with pytest.warns(UserWarning, match="look like probabilities"):
        distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    student = mlp(4, "student", seed=2)
    distiller = keras_distill.Distiller(
        teacher,
        student,
        keras_distill.losses.LogitsDistillation(T),
        teacher_output_type="probabilities",
    )
    expected = np_kd(twin_logits(exported, "t")(x), student(x), T)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = reported_distillation(distiller, x, y)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_unbuilt_models_from_a_python_generator_say_how_to_build_them():
    x, y = data(8)
    student = keras.Sequential([keras.layers.Dense(NUM_CLASSES)])
    distiller = keras_distill.Distiller(mlp(8, "teacher"), student)
    distiller.compile("sgd", sparse_ce())

    def batches():
        yield x, y

    with pytest.raises(ValueError, match="call them on a batch"):
        distiller.fit(batches(), epochs=1, verbose=0)
