"""Keras' own distillation tests, run against keras_distill by an import.

The two test files of `keras.distillation` are copied from the installed
Keras at test time, their imports of `Distiller`, `LogitsDistillation`
and `FeatureDistillation` swapped for ours, and run with pytest. Two
assertions are deliberate deviations and are skipped with the reason: the
teacher's `trainable` flag, which Keras sets to False and keras_distill
leaves as the user set it (the teacher is frozen by exclusion from the
trained weights). Any other failure fails this test.

`keras.distillation` appeared in Keras 3.12: on an older Keras (the
oldest supported is 3.8) there is nothing to run and the test is skipped
with that reason.
"""

import os
import pathlib
import re
import subprocess
import sys

import keras
import pytest

from keras_distill.losses import compat

SOURCE = pathlib.Path(keras.__file__).parent / "src" / "distillation"
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        compat.keras_distillation() is None or not SOURCE.is_dir(),
        reason=(
            "keras.distillation and its tests were added in Keras "
            f"{compat.KERAS_DISTILLATION_VERSION}; this is Keras "
            f"{keras.version()}"
        ),
    ),
]
FILES = ("distiller_test.py", "distillation_loss_test.py")
_LOSSES = "from keras.src.distillation.distillation_loss import "
IMPORTS = {
    "from keras.src.distillation.distiller import Distiller": (
        "from keras_distill import Distiller"
    ),
    _LOSSES + "LogitsDistillation": (
        "from keras_distill.losses import LogitsDistillation"
    ),
    _LOSSES + "FeatureDistillation": (
        "from keras_distill.losses import FeatureDistillation"
    ),
}
TRAINABLE_FLAG = (
    "keras_distill leaves the teacher's `trainable` flag as the user set "
    "it: the teacher is frozen by exclusion from the trained weights"
)
DEVIATIONS = {
    "test_distiller_initialization": TRAINABLE_FLAG,
    "test_teacher_freezing": TRAINABLE_FLAG,
}


def swapped(text):
    """A Keras test file with our imports and the deviations skipped."""
    for theirs, ours in IMPORTS.items():
        text = text.replace(theirs, ours)
    for name, reason in DEVIATIONS.items():
        text, count = re.subn(
            rf"(\n(\s+)def {name}\(self\):\n(\s+\"\"\".*?\"\"\"\n)?)",
            rf"\1\2    pytest.skip({reason!r})\n",
            text,
            flags=re.S,
        )
    return text


def test_keras_distillation_suite_passes_with_our_import(tmp_path):
    tests = 0
    for name in FILES:
        text = swapped((SOURCE / name).read_text())
        assert not any(theirs in text for theirs in IMPORTS), name
        tests += len(re.findall(r"\n\s+def test_", text))
        (tmp_path / name).write_text(text)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-v",
            "-p",
            "no:cacheprovider",
            *FILES,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, KERAS_BACKEND="tensorflow"),
    )
    summary = result.stdout.strip().splitlines()[-1]
    assert result.returncode == 0, result.stdout[-4000:]
    # Every test of Keras' files ran: all passed but the deviations (14
    # and 2 in Keras 3.15).
    passed = tests - len(DEVIATIONS)
    assert re.search(rf"\b{passed} passed, 2 skipped\b", summary), summary
    for name in DEVIATIONS:
        assert f"::{name} SKIPPED" in result.stdout, name
