"""The parity check: the Keras model's outputs, an exported model's, and
the report's fields that compare them (max error, argmax agreement,
accuracy on labelled data).
"""

import keras
import numpy as np


def ordered(names):
    """Output names in their order: `output_2` before `output_10`."""

    def key(name):
        stem, _, number = name.rpartition("_")
        return (stem, int(number)) if number.isdigit() else (name, -1)

    return sorted(names, key=key)


def _outputs(values):
    """A model's outputs as a list of float32 arrays."""
    if isinstance(values, dict):
        values = [values[k] for k in sorted(values)]
    return [
        np.asarray(keras.ops.convert_to_numpy(v), "float32")
        for v in keras.tree.flatten(values)
    ]


def keras_outputs(model, specs, named, batch_size=256):
    """The Keras model's outputs for inputs by name, in eager batches."""
    n = len(next(iter(named.values())))
    parts = []
    for start in range(0, n, batch_size):
        batch = {k: v[start : start + batch_size] for k, v in named.items()}
        parts.append(
            _outputs(model(specs.as_model_input(batch), training=False))
        )
    return [np.concatenate(p) for p in zip(*parts)]


def _valid(values, valid):
    """`values` at the valid positions of a `(batch, time)` mask, for
    outputs with that time axis (padding positions left out)."""
    if valid is None or values.ndim < 3 or values.shape[:2] != valid.shape:
        return values
    return values[valid.astype(bool)]


def compare(report, expected, exported, labels, valid=None, steps=None):
    """Fills the report's parity fields from lists of outputs.

    Args:
        report: The `ExportReport` to fill.
        expected: The Keras model's outputs, a list of arrays.
        exported: The exported model's, in the same order.
        labels: Labels of the inputs, or None.
        valid: None, or a `(batch, time)` mask of the valid positions:
            per-position outputs (and labels) are compared there only.
        steps: None, or the int8 step of each output (a quantization-aware
            model's): fills `within_one_step`.
    """
    expected = [np.asarray(e, "float32") for e in expected]
    exported = [
        np.asarray(x, "float32").reshape(e.shape)
        for e, x in zip(expected, exported)
    ]
    report.compared = int(len(expected[0]))
    if valid is not None:
        valid = np.asarray(valid)
        if labels is not None and np.shape(labels)[:2] == valid.shape:
            labels = np.asarray(labels)[valid.astype(bool)]
        expected = [_valid(e, valid) for e in expected]
        exported = [_valid(x, valid) for x in exported]
    report.max_abs_diff = float(
        max(np.abs(e - x).max() for e, x in zip(expected, exported))
    )
    if steps is not None and all(step for step in steps):
        near = [
            np.abs(e - x) <= step * 1.001  # float32 rounding of the grid
            for e, x, step in zip(expected, exported, steps)
        ]
        report.within_one_step = float(
            np.concatenate([n.ravel() for n in near]).mean()
        )
    classes = [(e, x) for e, x in zip(expected, exported) if e.shape[-1] > 1]
    if classes:
        report.argmax_agreement = float(
            np.mean([np.mean(e.argmax(-1) == x.argmax(-1)) for e, x in classes])
        )
    if labels is not None and classes:
        e, x = classes[0]
        labels = np.asarray(labels).reshape(x.shape[:-1])
        report.accuracy = float(np.mean(x.argmax(-1) == labels))
        report.keras_accuracy = float(np.mean(e.argmax(-1) == labels))
