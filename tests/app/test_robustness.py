"""The shifted test sets behind the robustness table."""

import keras
import numpy as np
import pytest

from keras_distill.app import robustness


def images(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(size=(n, 5, 5, 1)).astype("float32")


def test_noise_is_seeded_scaled_and_clipped():
    x = images()
    a = robustness.shifted(x, "noise 0.3", seed=1)
    b = robustness.shifted(x, "noise 0.3", seed=1)
    np.testing.assert_array_equal(a, b)
    assert a.min() >= x.min() and a.max() <= x.max()
    scale = x.max() - x.min()
    inside = (a > x.min()) & (a < x.max())  # not clipped
    std = np.std((a - x)[inside]) / scale
    assert 0.2 < std < 0.35
    assert not np.array_equal(a, robustness.shifted(x, "noise 0.3", seed=2))


def test_contrast_pulls_each_example_halfway_to_its_mean():
    x = images()
    out = robustness.shifted(x, "contrast 0.5")
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(out, mean + 0.5 * (x - mean), rtol=1e-6)


def test_shift_translates_whole_pixels_with_zero_fill():
    x = images() + 1.0  # no zeros inside the image
    out = robustness.shifted(x, "shift 2px", seed=0)
    for i in range(len(x)):
        padded = np.pad(x[i], ((2, 2), (2, 2), (0, 0)))
        crops = [
            padded[dy : dy + 5, dx : dx + 5]
            for dy in range(5)
            for dx in range(5)
        ]
        assert any(np.array_equal(c, out[i]) for c in crops)
    # Shifts do not apply to vectors.
    assert robustness.shifted(np.ones((3, 4)), "shift 2px") is None


def test_evaluate_reports_accuracy_per_condition():
    x = images(20)
    y = (x.mean(axis=(1, 2, 3)) > 0.5).astype("int32")
    inputs = keras.Input((5, 5, 1))
    mean = keras.layers.GlobalAveragePooling2D()(inputs)
    logits = keras.layers.Dense(2)(mean)
    model = keras.Model(inputs, logits)
    model.layers[-1].set_weights(
        [np.array([[-1.0, 1.0]]), np.array([0.5, -0.5])]
    )
    table = robustness.evaluate(model, x, y)
    assert set(table) == set(robustness.CONDITIONS)
    assert table["clean"] == 1.0  # the model thresholds the mean at 0.5
    # Contrast keeps each example's mean, so this model is unaffected.
    assert table["contrast 0.5"] == 1.0
    with pytest.raises(ValueError, match="Received: condition='blur'"):
        robustness.shifted(x, "blur")
