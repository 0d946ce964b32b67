import numpy as np
import pytest

from keras_distill.app import zoo


@pytest.mark.parametrize("name", zoo.names())
@pytest.mark.parametrize("shape", [(28, 28, 1), (8, 8, 3)])
def test_every_model_builds_and_outputs_logits(name, shape):
    model = zoo.build(name, shape, 7, seed=0)
    x = np.random.default_rng(0).random((2,) + shape).astype("float32")
    out = model.predict(x, verbose=0)
    assert out.shape == (2, 7)
    assert not np.allclose(out.sum(axis=1), 1.0)  # logits, no softmax
    assert model.count_params() > 0


def test_seed_makes_identical_models():
    a = zoo.build("mlp-tiny", (8, 8, 1), 10, seed=3)
    b = zoo.build("mlp-tiny", (8, 8, 1), 10, seed=3)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def test_sizes_match_the_references():
    assert zoo.build("cnn-small", (28, 28, 1), 10).count_params() == 20490
    assert zoo.build("mlp-large", (28, 28, 1), 10).count_params() == 2395210
    assert zoo.build("mlp-small", (28, 28, 1), 10).count_params() == 1276810


def test_mlp_takes_flat_features():
    model = zoo.build("mlp-small", (20,), 3)
    assert model.output_shape == (None, 3)


def test_errors():
    with pytest.raises(ValueError, match="Expected one of .*'cnn-small'"):
        zoo.build("vgg", (28, 28, 1), 10)
    with pytest.raises(ValueError, match="Expected an image shape"):
        zoo.build("cnn-small", (20,), 10)
    with pytest.raises(ValueError, match="num_classes=1"):
        zoo.build("mlp-tiny", (20,), 1)
