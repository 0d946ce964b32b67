"""SavedModel export: `saved_model` (a checked SavedModel for serving) and
the plain SavedModel write that TFLite conversion starts from.
"""

import os

import numpy as np
import tensorflow as tf

from keras_distill._utils import atomic_path
from keras_distill._utils import quiet_native_output
from keras_distill.export._parity import compare
from keras_distill.export._parity import keras_outputs
from keras_distill.export._parity import ordered
from keras_distill.export._prepared import prepare
from keras_distill.export._report import ExportReport
from keras_distill.export._specs import examples
from keras_distill.export._specs import random_inputs

VOCABULARY = "vocabulary.txt"


def write_saved_model(model, specs, folder):
    """Writes `model` as a SavedModel with the signature of `specs`."""
    model.export(
        folder,
        format="tf_saved_model",
        verbose=False,
        input_signature=specs.signature(),
    )


def saved_model(model, path, check_data=None, sequence_length=None):
    """Exports a model as a TensorFlow SavedModel for serving.

    The SavedModel has a `serving_default` signature with a dynamic batch
    dimension, and is checked after writing: it is reloaded with
    `tf.saved_model.load` and its signature's outputs are compared with
    Keras'.

    Args:
        model: A `keras.Model`, or a `keras_distill.Distiller` (its student
            is exported; the teacher never is).
        path: The SavedModel folder to write (replaced if it exists).
        check_data: Inputs to compare on: an array, `(x, y)` arrays, a
            `tf.data.Dataset`. Defaults to 7 random
            inputs, enough to check the signature and the batch axis.
        sequence_length: The length of token inputs whose length is not
            fixed (a KerasHub task: its preprocessor's by default).

    Returns:
        An `ExportReport`.

    Raises:
        ValueError: If the model has no defined input shape.
        OSError: If the folder cannot be written.

    Example:

    ```python
    report = keras_distill.export.saved_model(distiller, "student_savedmodel")
    print(report.max_abs_diff)
    ```
    """
    prepared = prepare(model, sequence_length)
    model, specs = prepared.model, prepared.specs
    path = os.fspath(path)
    if check_data is None:
        rng = np.random.default_rng(0)
        named = {
            k: random_inputs(rng, (7,) + specs.shapes[k][1:], specs.dtypes[k])
            for k in specs.names
        }
        labels = None
    else:
        named, labels = examples(check_data, specs, 1000, prepared.feed)
    with atomic_path(path, directory=True) as tmp:
        with quiet_native_output():
            write_saved_model(model, specs, tmp)
            loaded = tf.saved_model.load(tmp)
        signature = loaded.signatures["serving_default"]
        outputs = signature(**{k: tf.constant(v) for k, v in named.items()})
        exported = [outputs[k].numpy() for k in ordered(outputs)]
        expected = keras_outputs(model, specs, named)
        valid = named.get(prepared.mask) if prepared.mask else None
        if prepared.vocabulary is not None:  # the token ids' strings
            with open(os.path.join(tmp, VOCABULARY), "w") as f:
                f.writelines(f"{token}\n" for token in prepared.vocabulary)
        report = ExportReport(path=path, format="saved_model", bytes=_size(tmp))
        if prepared.vocabulary is not None:
            report.vocabulary_path = os.path.join(path, VOCABULARY)
        compare(report, expected, exported, labels, valid)
    return report


def _size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total
