"""The environment a run or a benchmark ran in, for its records.

`keras_distill.app.run` writes `versions()` into every `metrics.json`,
and each benchmark (`keras_distill.app.bench`) into its JSON output, so a
result can be traced to the versions and the machine that gave it.
"""

import os
import platform

import keras
import numpy as np
import tensorflow as tf

from keras_distill import __version__


def versions():
    """Versions of Python, TensorFlow, Keras, NumPy and this package.

    Returns:
        A dict: `python`, `tensorflow`, `keras`, `numpy`, `keras_distill`,
        and the `machine` (its architecture) and its number of `cpus`.
    """
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "keras_distill": __version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
