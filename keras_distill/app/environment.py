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
        and the `machine` (its architecture), its number of `cpus` and
        its `cpu` (`cpu_model()`).
    """
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "keras_distill": __version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "cpu": cpu_model(),
    }


# Instruction sets that change what a CPU's TensorFlow kernels cost.
_FEATURES = ("avx2", "avx512f", "avx512_vnni", "amx_tile")


def cpu_model(cpuinfo="/proc/cpuinfo"):
    """The CPU's model name, family and model numbers and its vector
    instruction sets, from `/proc/cpuinfo` (Linux); elsewhere
    `platform.processor()`. Two machines of one model name can differ in
    these: benchmark timings compare only on the same `cpu`.

    Args:
        cpuinfo: The file to read.

    Returns:
        A string, e.g. `"Intel(R) Xeon(R) Processor (family 6, model 143;
        avx2 avx512f)"`; empty if nothing is known.
    """
    try:
        with open(cpuinfo) as f:
            lines = f.read().split("\n\n")[0].splitlines()
    except OSError:
        return platform.processor()
    fields = {}
    for line in lines:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    have = " ".join(f for f in _FEATURES if f in flags)
    where = f"family {fields.get('cpu family', '?')}, model "
    where += fields.get("model", "?")
    name = fields.get("model name", platform.processor())
    return f"{name} ({where}; {have or 'no avx2'})"
