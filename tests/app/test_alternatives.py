"""The rows `compare` sets beside distillation
(`keras_distill.app.alternatives`): label smoothing against NumPy, the
noise scale, the transfer model's size and frozen prefix, and each row's
family in the plot."""

import keras
import numpy as np
import pytest
from conftest import np_log_softmax

from keras_distill.app import alternatives
from keras_distill.app import compare
from keras_distill.app import zoo
from keras_distill.app.config import RunConfig

QUIET = dict(verbose=0, log=lambda *args: None)


def test_label_smoothing_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 5)).astype("float32") * 3
    labels = rng.integers(0, 5, (6, 1))
    loss = alternatives.smoothed_crossentropy(0.1, 5)
    got = np.asarray(loss(labels, logits))
    target = np.full((6, 5), 0.1 / 5)
    target[np.arange(6), labels[:, 0]] += 0.9
    expected = -(target * np_log_softmax(logits.astype(np.float64))).sum(-1)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_transfer_model_fills_the_students_size_under_a_prefix():
    teacher = zoo.build("cnn-medium", (28, 28, 1), 10, seed=0)
    target = zoo.build("mlp-compact", (28, 28, 1), 10, seed=1).count_params()
    model, layer, hidden = alternatives.transfer_model(teacher, target, 10)
    # The deepest prefix that fits: up to the flattened second block (the
    # 128-unit layer would not fit); a hidden layer fills the rest.
    assert layer == "dropout"
    prefix = sum(
        teacher.get_layer(name).count_params() for name in ("conv_1", "conv_2")
    )
    head = (7 * 7 * 64 + 1) * hidden + (hidden + 1) * 10
    assert model.count_params() == prefix + head
    assert target - (7 * 7 * 64 + 11) < model.count_params() <= target
    # The prefix shares the teacher's layers.
    assert model.get_layer("conv_2") is teacher.get_layer("conv_2")
    assert model.output.shape == (None, 10)
    # Too small for any prefix with a hidden layer: the shallowest prefix
    # and a linear head.
    small, layer, hidden = alternatives.transfer_model(teacher, 100, 10)
    assert (layer, hidden) == ("conv_1", 0)
    assert small.count_params() == 320 + (28 * 28 * 32 + 1) * 10


def test_transfer_freezes_the_prefix_then_fine_tunes_it(tmp_path):
    from keras_distill.app.run import Run

    config = RunConfig(
        dataset="digits", teacher="cnn-medium", student="mlp-tiny", epochs=1
    )
    run_ = Run(tmp_path / "run", config, **QUIET)
    shape = tuple(run_.data.input_shape)
    teacher = zoo.build("cnn-medium", shape, 10, seed=0)
    before = [w.copy() for w in teacher.get_weights()]
    frozen, tuned, layer = alternatives.transfer(
        run_, teacher, 1, log=QUIET["log"]
    )
    conv = frozen.get_layer("conv_1").get_weights()[0]
    np.testing.assert_array_equal(conv, teacher.get_layer("conv_1").kernel)
    assert not np.array_equal(
        tuned.get_layer("conv_1").get_weights()[0], conv
    )
    # The teacher itself is untouched (the transfer model cuts a copy).
    for a, b in zip(before, teacher.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert layer in [each.name for each in teacher.layers]
    assert frozen.count_params() == tuned.count_params()


def test_noise_is_a_tenth_of_the_inputs_spread(tmp_path):
    from keras_distill.app.run import Run

    run_ = Run(tmp_path / "run", RunConfig(dataset="digits"), **QUIET)
    sample = np.asarray(run_.train_sample())
    assert alternatives.noise_stddev(run_) == pytest.approx(0.1 * sample.std())


@pytest.mark.parametrize(
    "name, expected",
    [
        ("teacher pruned 50% int8", ("teacher", "o")),
        ("student from scratch", ("student from scratch", "o")),
        ("student label smoothing 0.1", ("regularized student", "^")),
        ("student teacher-free KD", ("regularized student", "^")),
        ("transfer fine-tuned", ("transfer", "D")),
        (
            "distilled student int8 quantization-aware",
            ("distilled student", "s"),
        ),
        ("small CNN pruned 50% int8 quantization-aware", ("small CNN", "s")),
    ],
)
def test_every_row_has_a_family_in_the_plot(name, expected):
    label, _, marker = compare.family(name)
    assert (label, marker) == expected


def test_a_subclassed_teacher_gets_no_transfer_rows():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.hidden = keras.layers.Dense(8, "relu")
            self.logits = keras.layers.Dense(10)

        def call(self, x):
            return self.logits(self.hidden(x))

    net = Net()
    net(np.zeros((1, 4), "float32"))
    assert len(net.layers) == 2  # a weighted layer before the last
    assert alternatives.transfer_model(net, 1000, 10) is None
