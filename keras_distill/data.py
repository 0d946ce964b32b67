"""Moved: `keras_distill.app.datasets` and `keras_distill.pipelines`.

This module keeps `keras_distill.data.load` and its siblings working for
one release. Import the datasets from `keras_distill.app.datasets` and
the seeded pipelines from `keras_distill.pipelines`.
"""

import warnings

from keras_distill.app.datasets import SOURCES  # noqa: F401
from keras_distill.app.datasets import SPLIT_SEED  # noqa: F401
from keras_distill.app.datasets import Arrays  # noqa: F401
from keras_distill.app.datasets import Data  # noqa: F401
from keras_distill.app.datasets import load  # noqa: F401
from keras_distill.app.datasets import load_arrays  # noqa: F401
from keras_distill.app.datasets import stratified_split  # noqa: F401
from keras_distill.pipelines import batch_keys  # noqa: F401
from keras_distill.pipelines import pipeline  # noqa: F401
from keras_distill.pipelines import seeded_passes  # noqa: F401
from keras_distill.pipelines import shift_augment  # noqa: F401
from keras_distill.pipelines import shuffled_positions  # noqa: F401

warnings.warn(
    "`keras_distill.data` moved: import datasets from "
    "`keras_distill.app.datasets` and pipelines from "
    "`keras_distill.pipelines`. The old module goes in the next release.",
    DeprecationWarning,
    stacklevel=2,
)
