"""Pieces every benchmark shares: seeded data, models, training, errors.

`fit` is the seam the tests use: every benchmark trains through
`keras_distill.app.bench.common.fit`, so a test can replace it to see
which batches each model read.
"""

import dataclasses
import json
import statistics
import time

import keras
import numpy as np

from keras_distill._utils import predict
from keras_distill._utils import write_text
from keras_distill.app import datasets
from keras_distill.app import zoo
from keras_distill.callbacks import ResumableData
from keras_distill.pipelines import shift_augment


@dataclasses.dataclass
class SeedData:
    """One seed's data, with its shifted copy and the `ResumableData` that
    keys both by the epoch.

    Attributes:
        data: The `keras_distill.app.datasets.Data`.
        shifted: `data.train` with random ±2-pixel shifts.
        resumable: The `ResumableData` that recorded both pipelines.
        seed: The seed.
        batch_size: The batch size.
    """

    data: object
    shifted: object
    resumable: ResumableData
    seed: int
    batch_size: int

    @property
    def arrays(self):
        """The data's `Arrays`."""
        return self.data.arrays


def seed_data(dataset, batch_size, seed):
    """Loads `dataset` for one seed; see `SeedData`."""
    resumable = ResumableData()
    with resumable:
        data = datasets.load(dataset, batch_size=batch_size, seed=seed)
        shifted = shift_augment(data.train, seed=seed)
    return SeedData(data, shifted, resumable, seed, batch_size)


def build(architecture, seed_data, seed, name=None):
    """A zoo model with initial weights fixed by `seed`."""
    keras.utils.set_random_seed(seed_data.seed)
    data = seed_data.data
    model = zoo.build(
        architecture, data.input_shape, data.num_classes, seed=seed
    )
    if name:
        model.name = name
    return model


def cross_entropy():
    """Sparse categorical cross-entropy on logits."""
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def fit(model, train, epochs, resumable):
    """`model.fit`, with epoch k reading pass k of the seed's pipelines.

    `resumable` is the `ResumableData` that recorded them: without it,
    each training would start where the one before it left the shared
    pipeline, and a model's batches would depend on the epochs of the
    models trained before it.
    """
    model.fit(
        train, epochs=epochs, verbose=0, shuffle=False, callbacks=[resumable]
    )


def fit_from_labels(model, seed_data, epochs, train=None):
    """Compiles `model` with Adam and cross-entropy and fits it."""
    model.compile("adam", cross_entropy(), metrics=["accuracy"])
    fit(model, train or seed_data.data.train, epochs, seed_data.resumable)
    return model


def test_errors(model, arrays):
    """The number of misclassified test examples."""
    logits = predict(model, arrays.x_test)
    return int((logits.argmax(-1) != arrays.y_test).sum())


def next_token_ce(logits, y):
    """The mean cross-entropy per token of next-token logits.

    Args:
        logits: `(windows, steps, vocabulary)` logits.
        y: `(windows, steps)` integer next tokens.

    Returns:
        The mean cross-entropy per token, in nats, as a float.
    """
    logits = np.asarray(logits, np.float64)
    logits -= logits.max(-1, keepdims=True)
    log_z = np.log(np.exp(logits).sum(-1))
    picked = np.take_along_axis(logits, y[..., None], -1)[..., 0]
    return float(np.mean(log_z - picked))


def ratio(a, b):
    """`sum(a) / sum(b)`, or None when `b` sums to 0."""
    return sum(a) / sum(b) if sum(b) else None


class Timer:
    """Records each trained model's test errors and training seconds.

    Args:
        keys: The keys to record.
        log: A function that prints a progress line.
    """

    def __init__(self, keys, log=print):
        self.errors = {k: [] for k in keys}
        self.seconds = {k: [] for k in keys}
        self.log = log

    def __call__(self, key, train_fn, arrays, prefix):
        """Runs `train_fn()`, records the model's errors; returns it."""
        start = time.perf_counter()
        model = train_fn()
        self.record(key, model, arrays, prefix, time.perf_counter() - start)
        return model

    def record(self, key, model, arrays, prefix, seconds=0.0):
        """Records the test errors of a model trained elsewhere."""
        self.seconds[key].append(round(seconds, 1))
        self.errors[key].append(test_errors(model, arrays))
        self.log(
            f"[{prefix}] {key}: {self.errors[key][-1]} errors "
            f"({self.seconds[key][-1]} s)"
        )


def write_json(path, result):
    """Writes `result` to `path` atomically, when `path` is given."""
    if path:
        write_text(path, json.dumps(result, indent=2) + "\n")


def errors_summary(timer, n):
    """The JSON fields of a `Timer`'s records, over `n` test examples."""
    return {
        "test_examples": n,
        "errors": timer.errors,
        "train_seconds": timer.seconds,
        "mean_error": {
            k: statistics.mean(v) / n for k, v in timer.errors.items()
        },
    }
