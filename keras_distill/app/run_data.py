"""The data side of a run: its dataset (arrays in memory or a folder
streamed from disk), a fresh training pipeline per phase with the role's
augmentation, bounded test and training samples, and predictions over
the whole test split. `keras_distill.app.run.Run` inherits it.
"""

import os

import keras
import numpy as np

from keras_distill import export
from keras_distill._utils import predict
from keras_distill.app import datasets as data
from keras_distill.app import models
from keras_distill.augment import ConsistentAugment
from keras_distill.augment import Mixup
from keras_distill.augment import RandomShift
from keras_distill.pipelines import pipeline
from keras_distill.pipelines import shift_augment

# Random 2-pixel shifts help 28×28 digits and wreck 8×8 ones.
MIN_SHIFT_SIZE = 16
# A folder's examples held in memory for robustness and export checks.
EVALUATION_LIMIT = 1000


class RunData:
    """The run's data, for a class that has `config` (a `RunConfig`)."""

    @property
    def data(self):
        """The run's `keras_distill.app.datasets.Data` (loaded once)."""
        if self._data is None:
            self._data = self._load_data()
        return self._data

    def _load_data(self):
        c = self.config
        folder = {}
        if os.path.isdir(c.dataset):  # streamed from disk
            shape = models.image_shape(c.architecture("student"))
            folder = dict(
                test_source=c.test_dataset,
                image_size=c.image_size or (shape and shape[:2]),
                channels=shape[2] if shape else None,
            )
        return data.load(
            c.dataset,
            batch_size=c.batch_size,
            validation_split=c.validation_split,
            seed=c.seed,
            data_dir=c.data_dir,
            **folder,
        )

    @property
    def streamed(self):
        """Whether the data is a folder streamed from disk (no arrays)."""
        return self.data.arrays is None

    def test_arrays(self, limit=EVALUATION_LIMIT):
        """`(x_test, y_test)`: the test split's arrays, or for a folder its
        first `limit` examples (memory bounded by `limit`)."""
        if not self.streamed:
            return self.data.arrays.x_test, self.data.arrays.y_test
        return data.take_arrays(self.data.test, limit)

    def train_sample(self, limit=export.REPRESENTATIVE_SAMPLES):
        """Training inputs for int8 calibration (at most `limit` for a
        folder)."""
        if not self.streamed:
            return self.data.arrays.x_train
        return data.take_arrays(self.data.train, limit)[0]

    def train_dataset(self, role="student"):
        """A fresh training pipeline, with the role's augmentation applied.

        Each phase gets its own pipeline, so its shuffling and shifts depend
        on the seed alone, not on how many epochs an earlier phase of the
        same process drew: `keras-distill distill` run alone gives what the
        same phase gives inside `keras-distill demo`.
        """
        c = self.config
        if self.streamed:  # a fresh pipeline, shuffled from the seed
            train = self._load_data().train
        else:
            arrays = self.data.arrays
            train = pipeline(
                arrays.x_train,
                arrays.y_train,
                c.batch_size,
                shuffle=True,
                seed=c.seed,
            )
        augment = self.augmentation(role)
        if augment in ("shift", "consistent"):
            if not (augment == "consistent" and role == "student"):
                train = shift_augment(train, seed=self.config.seed)
        return train

    def augmentation(self, role="student"):
        """The role's augmentation: the config's, or by image size.

        Args:
            role: `"teacher"` or `"student"`.

        Returns:
            `"shift"`, `"none"` or `"consistent"`. An unset (null) value
            means `"shift"` for images of at least `MIN_SHIFT_SIZE` pixels
            a side and `"none"` otherwise.
        """
        value = (
            self.config.teacher_augment
            if role == "teacher"
            else self.config.augment
        )
        if value is not None:
            return value
        shape = tuple(self.data.input_shape)
        images = len(shape) == 3 and min(shape[:2]) >= MIN_SHIFT_SIZE
        return "shift" if images else "none"

    def consistent_augment(self):
        """The distiller's in-step augmentation, or None.

        With `augment: consistent`: shifts of up to 2 pixels (images only)
        and mixup (alpha 0.2), seeded by the run's seed.
        """
        if self.config.augment != "consistent":
            return None
        seed = self.config.seed
        layers = []
        if len(self.data.input_shape) == 3:
            layers.append(RandomShift(2, seed=seed))
        layers.append(Mixup(0.2, seed=seed + 1))
        return ConsistentAugment(layers)

    def test_predictions(self, model):
        """`(predicted classes, labels)` over the whole test split (a
        folder's batch by batch, from disk)."""
        if not self.streamed:
            arrays = self.data.arrays
            return predict(model, arrays.x_test).argmax(-1), arrays.y_test
        predicted, labels = [], []
        for x, y in self.data.test:
            logits = keras.ops.convert_to_numpy(model(x, training=False))
            predicted.append(logits.argmax(-1))
            labels.append(np.asarray(y))
        return np.concatenate(predicted), np.concatenate(labels)
