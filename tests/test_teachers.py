import os

import keras
import numpy as np
import pytest
from conftest import NUM_FEATURES
from conftest import data
from conftest import mlp
from conftest import np_kd
from conftest import np_log_softmax
from conftest import sparse_ce

import keras_distill
from keras_distill import Distiller
from keras_distill import teachers
from keras_distill.teachers import Ensemble
from keras_distill.teachers import TeacherCache


def counter(model, name):
    return float(model.get_layer(name).count.numpy())


def test_cached_training_equals_online_and_never_calls_the_teacher():
    from keras_distill.pipelines import pipeline

    x, y = data(64)
    teacher = mlp(16, "teacher", counter=True, seed=1)
    cache = TeacherCache(teacher, x, batch_size=64, verbose=0)
    assert counter(teacher, "teacher_counter") == 1.0  # one pass, one batch

    online_student = mlp(8, "student", seed=2)
    cached_student = mlp(8, "student", seed=2)
    results = []
    for student, ds in (
        # The cache serves the batches of `data.pipeline` with its seed.
        (online_student, pipeline(x, y, 16, shuffle=True, seed=3)),
        (cached_student, cache.dataset(x, y, batch_size=16, seed=3)),
    ):
        distiller = Distiller(teacher, student, student_loss_weight=0.3)
        distiller.compile(keras.optimizers.SGD(0.1), sparse_ce())
        calls = counter(teacher, "teacher_counter")
        history = distiller.fit(ds, epochs=1, verbose=0, shuffle=False)
        results.append(
            (counter(teacher, "teacher_counter") - calls, history.history)
        )
    online_calls, online_history = results[0]
    cached_calls, cached_history = results[1]
    assert online_calls == 4.0 and cached_calls == 0.0
    for a, b in zip(online_student.get_weights(), cached_student.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(
        online_history["distillation_loss"],
        cached_history["distillation_loss"],
        rtol=1e-5,
    )


def test_cache_outputs_equal_the_teacher():
    x, _ = data(40)
    teacher = mlp(16, "teacher", seed=1)
    cache = TeacherCache(teacher, x, batch_size=16, verbose=0)
    assert cache.outputs.shape == (1, 40, 3)
    np.testing.assert_allclose(
        cache.outputs[0], teacher.predict(x, verbose=0), atol=1e-6
    )


def test_stored_cache_is_reused_and_invalidated(tmp_path):
    x, _ = data(32)
    path = str(tmp_path / "cache.npz")
    teacher = mlp(16, "teacher", seed=1)
    first = TeacherCache(teacher, x, path=path, verbose=0)
    assert first.rebuilt and os.path.exists(path)
    again = TeacherCache(teacher, x, path=path, verbose=0)
    assert not again.rebuilt
    np.testing.assert_array_equal(again.outputs, first.outputs)

    # A changed teacher weight invalidates it.
    kernel = teacher.get_layer("teacher_logits").kernel
    kernel.assign(kernel.numpy() + 0.01)
    with pytest.raises(ValueError, match="built for another teacher"):
        TeacherCache(teacher, x, path=path, on_mismatch="error", verbose=0)
    rebuilt = TeacherCache(teacher, x, path=path, verbose=0)
    assert rebuilt.rebuilt
    assert not np.allclose(rebuilt.outputs, first.outputs)

    # So does changed data.
    x2 = x.copy()
    x2[0, 0] += 1.0
    with pytest.raises(ValueError, match="built for another data"):
        TeacherCache(teacher, x2, path=path, on_mismatch="error", verbose=0)


def test_dataset_refuses_other_inputs():
    x, y = data(16)
    cache = TeacherCache(mlp(16, "teacher", seed=1), x, verbose=0)
    with pytest.raises(ValueError, match="inputs the teacher cache was built"):
        cache.dataset(x[::-1], y)


def test_corrupted_cache_file(tmp_path):
    x, _ = data(16)
    path = tmp_path / "cache.npz"
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupted or not a teacher cache"):
        TeacherCache(mlp(16, "teacher", seed=1), x, path=str(path), verbose=0)


def test_augmentation_with_a_plain_cache_is_refused():
    x, y = data(16)
    cache = TeacherCache(mlp(16, "teacher", seed=1), x, verbose=0)
    with pytest.raises(ValueError, match="cannot be used with a fixed teacher"):
        cache.dataset(x, y, augment="shift")


def _image_teacher(seed=1):
    inputs = keras.Input((6, 6, 1))
    h = keras.layers.Flatten()(inputs)
    return keras.Model(inputs, keras.layers.Dense(3)(h), name=f"img_{seed}")


def test_views_replay_the_same_shifts_and_outputs():
    rng = np.random.default_rng(0)
    x = rng.random((12, 6, 6, 1)).astype("float32")
    y = rng.integers(0, 3, 12).astype("int32")
    teacher = _image_teacher()
    cache = TeacherCache(teacher, x, views=3, seed=5, verbose=0)
    assert cache.outputs.shape == (3, 12, 3)
    assert not np.allclose(cache.outputs[0], cache.outputs[1])
    ds = cache.dataset(x, y, batch_size=12, seed=1, augment="shift")
    for features, _ in ds.take(2):  # two epochs' worth
        served = features["inputs"].numpy()
        # The outputs served are the teacher's outputs on the served views.
        np.testing.assert_allclose(
            features["teacher_outputs"].numpy(),
            teacher.predict(served, verbose=0),
            atol=1e-5,
        )
    # The same seed replays the same views.
    again = TeacherCache(teacher, x, views=3, seed=5, verbose=0)
    np.testing.assert_array_equal(again.outputs, cache.outputs)
    # A distiller trains from it.
    inputs = keras.Input((6, 6, 1))
    student = keras.Model(
        inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs))
    )
    distiller = Distiller(teacher, student)
    distiller.compile("adam", sparse_ce())
    history = distiller.fit(ds, epochs=2, verbose=0, shuffle=False)
    assert np.isfinite(history.history["distillation_loss"]).all()


def test_errors():
    x, _ = data(8)
    teacher = mlp(16, "teacher", seed=1)
    with pytest.raises(ValueError, match="argument `teacher`"):
        TeacherCache("teacher.keras", x)
    with pytest.raises(ValueError, match="argument `views`"):
        TeacherCache(teacher, x, views=0)
    with pytest.raises(ValueError, match="Shifted views need images"):
        TeacherCache(teacher, x, views=2)
    with pytest.raises(ValueError, match="argument `on_mismatch`"):
        TeacherCache(teacher, x, on_mismatch="ignore")
    with pytest.raises(ValueError, match="argument `x`"):
        TeacherCache(teacher, np.zeros((0, NUM_FEATURES)))


# -- ensembles -----------------------------------------------------------------


def _np_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)


def test_ensemble_of_identical_teachers_equals_one():
    x, _ = data(10)
    teacher = mlp(16, "teacher", seed=1)
    ensemble = Ensemble([teacher, teacher], temperature=3.0)
    np.testing.assert_allclose(
        _np_softmax(ensemble.predict(x, verbose=0) / 3.0),
        _np_softmax(teacher.predict(x, verbose=0) / 3.0),
        atol=1e-6,
    )
    logits = Ensemble([teacher, teacher], mode="logits")
    np.testing.assert_allclose(
        logits.predict(x, verbose=0), teacher.predict(x, verbose=0), atol=1e-6
    )


def test_ensemble_weights_are_respected():
    x, _ = data(10)
    a, b = mlp(16, "a", seed=1), mlp(16, "b", seed=2)
    za, zb = a.predict(x, verbose=0), b.predict(x, verbose=0)
    ensemble = Ensemble([a, b], weights=[3.0, 1.0], temperature=2.0)
    expected = 0.75 * _np_softmax(za / 2.0) + 0.25 * _np_softmax(zb / 2.0)
    np.testing.assert_allclose(
        _np_softmax(ensemble.predict(x, verbose=0) / 2.0), expected, atol=1e-6
    )
    logits = Ensemble([a, b], weights=[3.0, 1.0], mode="logits")
    np.testing.assert_allclose(
        logits.predict(x, verbose=0), 0.75 * za + 0.25 * zb, atol=1e-5
    )


def test_ensemble_online_and_cached():
    x, y = data(32)
    ensemble = Ensemble([mlp(16, "a", seed=1), mlp(8, "b", seed=2)])
    distiller = Distiller(ensemble, mlp(4, "student", seed=3))
    distiller.compile("adam", sparse_ce())
    online = distiller.fit(x, y, epochs=1, verbose=0)
    cache = TeacherCache(ensemble, x, verbose=0)
    cached = distiller.fit(
        cache.dataset(x, y), epochs=1, verbose=0, shuffle=False
    )
    assert np.isfinite(online.history["loss"] + cached.history["loss"]).all()
    config = ensemble.get_config()
    restored = Ensemble.from_config(config)
    assert len(restored.teachers) == 2 and restored.mode == "probabilities"
    assert restored.get_config()["weights"] == [1.0, 1.0]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"teachers": []}, "argument `teachers`"),
        ({"weights": [1.0]}, "argument `weights`"),
        ({"weights": [-1.0, 1.0]}, "argument `weights`"),
        ({"mode": "vote"}, "argument `mode`"),
        ({"temperature": 0}, "argument `temperature`"),
    ],
)
def test_ensemble_errors(kwargs, match):
    args = {"teachers": [mlp(4, "a", seed=1), mlp(4, "b", seed=2)], **kwargs}
    with pytest.raises(ValueError, match=match):
        Ensemble(**args)


def test_fingerprints_change_with_weights_and_data():
    x, _ = data(8)
    model = mlp(4, "m", seed=1)
    before = teachers.fingerprint_model(model)
    model.get_layer("m_h").bias.assign(np.ones(4, "float32"))
    assert teachers.fingerprint_model(model) != before
    assert teachers.fingerprint_array(x) != teachers.fingerprint_array(x + 1)


def test_cache_from_a_generator_dataset_with_weights_equals_online():
    import tensorflow as tf

    x, y = data(40)
    w = np.random.default_rng(3).uniform(0.2, 2.0, 40).astype("float32")

    def batches():
        for start in range(0, 40, 8):
            end = start + 8
            yield x[start:end], y[start:end], w[start:end]

    spec = (
        tf.TensorSpec((None, NUM_FEATURES), "float32"),
        tf.TensorSpec((None,), "int32"),
        tf.TensorSpec((None,), "float32"),
    )
    generated = tf.data.Dataset.from_generator(batches, output_signature=spec)
    assert generated.cardinality() == tf.data.UNKNOWN_CARDINALITY
    teacher = mlp(16, "teacher", seed=1)
    cache = TeacherCache(teacher, generated, batch_size=16, verbose=0)
    np.testing.assert_array_equal(cache.x, x)
    np.testing.assert_array_equal(cache.y, y)
    np.testing.assert_array_equal(cache.sample_weight, w)
    np.testing.assert_allclose(cache.outputs[0], teacher(x), atol=1e-6)

    students = []
    for source in ("online", "cached"):
        student = mlp(8, "student", seed=2)
        distiller = Distiller(teacher, student, student_loss_weight=0.3)
        distiller.compile(keras.optimizers.SGD(0.1), sparse_ce())
        if source == "online":
            distiller.fit(
                x,
                y,
                sample_weight=w,
                batch_size=8,
                epochs=1,
                shuffle=False,
                verbose=0,
            )
        else:
            ds = cache.dataset(batch_size=8, shuffle=False)
            assert len(ds.element_spec) == 3
            distiller.fit(ds, epochs=1, verbose=0, shuffle=False)
        students.append(student.get_weights())
    for a, b in zip(*students):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_cache_refuses_an_infinite_or_empty_dataset():
    import tensorflow as tf

    x, _ = data(8)
    teacher = mlp(16, "teacher", seed=1)
    endless = tf.data.Dataset.from_tensor_slices(x).batch(4).repeat()
    with pytest.raises(ValueError, match="Expected a finite dataset"):
        TeacherCache(teacher, endless, verbose=0)
    empty = tf.data.Dataset.from_tensor_slices(x).batch(4).take(0)
    with pytest.raises(ValueError, match="at least one batch"):
        TeacherCache(teacher, empty, verbose=0)


def test_cache_of_dict_inputs_and_an_unbuilt_teacher():
    rng = np.random.default_rng(0)
    x = {
        "a": rng.normal(size=(12, 4)).astype("float32"),
        "b": rng.normal(size=(12, 2)).astype("float32"),
    }

    class Concat(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = keras.layers.Dense(3)

        def call(self, inputs):
            return self.dense(
                keras.ops.concatenate([inputs["a"], inputs["b"]], axis=-1)
            )

    teacher = Concat(name="concat")
    cache = TeacherCache(teacher, x, batch_size=5, verbose=0)
    assert teacher.built
    np.testing.assert_allclose(cache.outputs[0], teacher(x), atol=1e-6)
    batch = next(iter(cache.dataset(x, batch_size=12, shuffle=False)))[0]
    np.testing.assert_array_equal(batch["inputs"]["b"], x["b"])


# -- ensemble members are seen as single teachers are ----------------------


def _softmax_member(seed):
    """A functional member ending in Dense(..., activation="softmax")."""
    init = keras.initializers.GlorotUniform(seed=seed)
    inputs = keras.Input((NUM_FEATURES,))
    h = keras.layers.Dense(8, activation="relu", kernel_initializer=init)(
        inputs
    )
    outputs = keras.layers.Dense(
        3, activation="softmax", kernel_initializer=init
    )(h)
    return keras.Model(inputs, outputs, name=f"softmax_member_{seed}")


def _np_member_logits(model, x):
    """NumPy logits of a two-Dense member, from its weights (pre-softmax)."""
    w1, b1, w2, b2 = [np.asarray(w, np.float64) for w in model.get_weights()]
    return np.maximum(x @ w1 + b1, 0.0) @ w2 + b2


def _np_ensemble(logits, weights, mode, temperature):
    """NumPy reference of the documented ensemble formula."""
    weights = np.asarray(weights, np.float64) / np.sum(weights)
    if mode == "logits":
        return sum(w * z for w, z in zip(weights, logits))
    p = sum(
        w * np.exp(np_log_softmax(z / temperature))
        for w, z in zip(weights, logits)
    )
    return temperature * np.log(p)


@keras.saving.register_keras_serializable(package="keras_distill_tests")
class _ProbabilityBox(keras.Model):
    """A subclassed member that returns probabilities (no inspectable head)."""

    def __init__(self, inner, **kwargs):
        super().__init__(**kwargs)
        self.inner = inner

    def call(self, x, training=False):
        return keras.ops.softmax(self.inner(x), axis=-1)


def _distillation_loss(teacher, student, x, y, cache=None, top_k=None):
    """The distillation term of one step at learning rate 0."""
    distiller = Distiller(
        teacher,
        student,
        distillation_losses=keras_distill.losses.LogitsDistillation(4.0),
        student_loss_weight=0.0,
    )
    distiller.compile(keras.optimizers.SGD(0.0), sparse_ce())
    if cache is None:
        data_ = (x, y)
        kwargs = {"batch_size": len(x)}
    else:
        data_ = (cache.dataset(x, y, batch_size=len(x), shuffle=False),)
        kwargs = {}
    history = distiller.fit(*data_, epochs=1, verbose=0, **kwargs)
    return history.history["distillation_loss"][0]


@pytest.mark.parametrize("mode", ["probabilities", "logits"])
def test_ensemble_of_softmax_and_logits_members_against_numpy(mode):
    x, y = data(24)
    soft = _softmax_member(seed=1)
    plain = mlp(8, "plain", seed=2)
    box = _ProbabilityBox(mlp(8, "boxed", seed=4), name="box")
    box(x[:2])
    ensemble = Ensemble(
        [soft, plain, box],
        weights=[0.75, 0.25, 0.5],
        mode=mode,
        temperature=4.0,
        output_types=["auto", "auto", "probabilities"],
    )
    student = mlp(4, "student", seed=3)
    members = [
        _np_member_logits(soft, x),
        plain.predict(x, verbose=0).astype(np.float64),
        box.inner.predict(x, verbose=0).astype(np.float64),
    ]
    expected_logits = _np_ensemble(members, [0.75, 0.25, 0.5], mode, 4.0)
    np.testing.assert_allclose(
        np_log_softmax(ensemble.predict(x, verbose=0) / 4.0),
        np_log_softmax(expected_logits / 4.0),
        atol=1e-5,
    )
    s_logits = student.predict(x, verbose=0)
    expected = np_kd(expected_logits, s_logits, 4.0)
    online = _distillation_loss(ensemble, student, x, y)
    np.testing.assert_allclose(online, expected, rtol=1e-4)
    for top_k in (None, 3):  # top-k at k = V is exact
        cache = TeacherCache(ensemble, x, top_k=top_k, verbose=0)
        cached = _distillation_loss(ensemble, student, x, y, cache=cache)
        np.testing.assert_allclose(cached, expected, rtol=1e-4)


def test_ensemble_member_outputs_and_declared_types():
    x, _ = data(8)
    inputs = keras.Input((NUM_FEATURES,))
    h = keras.layers.Dense(8, activation="relu")(inputs)
    aux = keras.layers.Dense(2, name="aux")(h)
    main = keras.layers.Dense(3, activation="softmax", name="main")(h)
    two = keras.Model(inputs, {"aux": aux, "main": main}, name="two")
    plain = mlp(8, "plain", seed=2)
    with pytest.raises(ValueError, match=r"`outputs\[0\]=`.*'aux'"):
        Ensemble([two, plain])
    ensemble = Ensemble([two, plain], outputs=["main", None], mode="logits")
    w1, b1 = [np.asarray(w) for w in two.layers[1].get_weights()]
    w2, b2 = [np.asarray(w) for w in two.get_layer("main").get_weights()]
    z_main = np.maximum(x @ w1 + b1, 0) @ w2 + b2
    np.testing.assert_allclose(
        ensemble.predict(x, verbose=0),
        0.5 * z_main + 0.5 * plain.predict(x, verbose=0),
        atol=1e-5,
    )
    box = _ProbabilityBox(mlp(8, "boxed", seed=4), name="box")
    box(x[:2])
    with pytest.warns(UserWarning, match=r"output_types\[1\]='probabilities'"):
        TeacherCache(Ensemble([plain, box]), x, verbose=0)
    with pytest.raises(ValueError, match=r"`output_types\[1\]`"):
        Ensemble([plain, box], output_types=["auto", "soft"])
    with pytest.raises(ValueError, match="Expected one value for every"):
        Ensemble([plain, box], output_types=["auto"])
    restored = Ensemble.from_config(
        Ensemble([two, plain], outputs=["main", None]).get_config()
    )
    assert restored.outputs_ == ["main", None]


@keras.saving.register_keras_serializable(package="keras_distill_tests")
class _CountingTeacher(keras.Model):
    """A subclassed teacher that counts the batches it runs on."""

    def __init__(self, inner, **kwargs):
        super().__init__(**kwargs)
        self.inner = inner
        self.calls = keras.Variable(0.0, trainable=False, name="calls")

    def call(self, x, training=False):
        self.calls.assign_add(1.0)
        return self.inner(x)


@pytest.mark.parametrize("ensemble", [False, True])
def test_a_cache_serves_without_calling_the_teacher(ensemble):
    x, y = data(32)
    counting = _CountingTeacher(mlp(8, "inner", seed=1), name="counting")
    counting(x[:2])
    teacher = (
        Ensemble([counting, mlp(8, "b", seed=2)]) if ensemble else (counting)
    )
    cache = TeacherCache(teacher, x, batch_size=32, verbose=0)
    before = float(counting.calls.numpy())
    distiller = Distiller(teacher, mlp(4, "student", seed=3))
    distiller.compile("sgd", sparse_ce())
    distiller.fit(cache.dataset(x, y, batch_size=8), epochs=2, verbose=0)
    assert float(counting.calls.numpy()) == before
    online = Distiller(teacher, mlp(4, "student2", seed=3))
    online.compile("sgd", sparse_ce())
    online.fit(x, y, batch_size=8, epochs=1, verbose=0)
    # Online: four steps, plus at most one probe of the undeclared outputs.
    assert float(counting.calls.numpy()) - before in (4.0, 5.0)
