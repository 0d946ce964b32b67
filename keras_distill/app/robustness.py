"""Accuracy on shifted versions of the test set.

A model that only memorised its training distribution loses accuracy as
soon as the inputs move a little. `evaluate` measures the accuracy of a
model on the clean test set and on copies changed in a few controlled ways,
each deterministic for a seed:

- `noise 0.1`, `noise 0.3`: additive Gaussian noise with that standard
  deviation, relative to the data's range, clipped back into the range;
- `shift 2px`: every image translated by up to 2 pixels each way (a whole
  number of pixels, zeros filling the edge); images only;
- `contrast 0.5`: each example pulled halfway towards its own mean.
"""

import keras
import numpy as np

from keras_distill._validation import check_choice
from keras_distill.augment import shift_images

CONDITIONS = ("clean", "noise 0.1", "noise 0.3", "shift 2px", "contrast 0.5")


def shifted(x, condition, seed=0):
    """A copy of the inputs `x` under one of the `CONDITIONS`.

    Args:
        x: A NumPy array of inputs, examples first.
        condition: One of `CONDITIONS`.
        seed: The seed of the random draws.

    Returns:
        A float32 array shaped like `x`, or None when the condition does
        not apply (shifts of non-image data).

    Raises:
        ValueError: If `condition` is unknown.
    """
    check_choice("condition", condition, CONDITIONS)
    x = np.asarray(x, dtype=np.float32)
    rng = np.random.default_rng(seed)
    low, high = float(x.min()), float(x.max())
    scale = (high - low) or 1.0
    if condition == "clean":
        return x.copy()
    if condition.startswith("noise"):
        sigma = float(condition.split()[1]) * scale
        noisy = x + rng.normal(0.0, sigma, size=x.shape).astype(np.float32)
        return np.clip(noisy, low, high)
    if condition.startswith("contrast"):
        factor = float(condition.split()[1])
        axes = tuple(range(1, x.ndim))
        mean = x.mean(axis=axes, keepdims=True)
        return (mean + factor * (x - mean)).astype(np.float32)
    if x.ndim != 4:
        return None
    pixels = 2
    offsets = rng.integers(0, 2 * pixels + 1, size=(len(x), 2))
    return keras.ops.convert_to_numpy(shift_images(x, offsets, pixels))


def evaluate(model, x, y, seed=0, batch_size=256):
    """Accuracy of `model` under each of the `CONDITIONS`.

    Args:
        model: A `keras.Model` whose outputs' argmax is the class.
        x: Test inputs (NumPy).
        y: Integer test labels.
        seed: The seed of the shifted copies (the same for every model, so
            models are compared on identical inputs).
        batch_size: Prediction batch size.

    Returns:
        A dict `condition -> accuracy` (conditions that do not apply to
        the data are left out).

    Example:

    >>> table = keras_distill.app.robustness.evaluate(student, x_test, y_test)
    >>> sorted(table)[:2]
    ['clean', 'contrast 0.5']
    """
    from keras_distill._utils import predict

    y = np.asarray(y).reshape(-1)
    result = {}
    for condition in CONDITIONS:
        inputs = shifted(x, condition, seed)
        if inputs is None:
            continue
        logits = predict(model, inputs, batch_size=batch_size)
        result[condition] = float(np.mean(logits.argmax(-1) == y))
    return result
