"""Checks on the data a `Distiller` is given, before any graph is traced.

Arrays are checked in full (shape against the student's input, finite
values, labels within the student's classes, at least one example);
`tf.data` datasets by their element spec and cardinality; the cached
teacher outputs against the losses and the student. `guarded_fit` adds
the NaN guard's callback (`keras_distill._nan_guard`).
"""

import contextlib

import keras
import numpy as np
import tensorflow as tf

from keras_distill._nan_guard import NonFiniteLossError  # noqa: F401
from keras_distill._nan_guard import NonFiniteLossGuard
from keras_distill._nan_guard import non_finite_message
from keras_distill._nan_guard import term_from_error
from keras_distill.losses.base import DistillationLoss
from keras_distill.teachers import INPUT_KEY
from keras_distill.teachers import TEACHER_KEY


def _shape_matches(expected, received):
    if len(expected) != len(received):
        return False
    return all(
        e is None or r is None or e == r for e, r in zip(expected, received)
    )


def _describe(shape):
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def expected_inputs(model):
    """A model's input shapes: one tuple, a dict by input name, or None.

    Args:
        model: A `keras.Model`.

    Returns:
        The shape (batch axis first) of a single-input model; a dict of
        shapes keyed by input name (dict keys, or the `keras.Input` names
        of a list of inputs); None when unknown (a model not built).
    """
    from keras_distill._utils import input_shape

    try:
        inputs = model.input
    except (AttributeError, ValueError):
        return input_shape(model)
    if isinstance(model, keras.Sequential):
        return input_shape(model)
    if isinstance(inputs, dict):
        return {k: tuple(v.shape) for k, v in inputs.items()}
    if isinstance(inputs, (list, tuple)):
        return {t.name: tuple(t.shape) for t in inputs}
    return tuple(inputs.shape)


def check_inputs(method, x, expected_shape, key=None):
    """Checks the input arrays or dataset against the student's inputs.

    Args:
        method: `"fit"`, `"evaluate"` or `"predict"`, for the message.
        x: The inputs: a NumPy array, a dict of arrays or a
            `tf.data.Dataset` (anything else is left to Keras).
        expected_shape: The student's input shape, batch axis first, a
            dict of shapes by input name (`expected_inputs`), or None when
            unknown.

    Raises:
        ValueError: If there is no example, a shape differs, or a value is
            NaN or infinite.
    """
    if isinstance(x, tf.data.Dataset):
        _check_dataset(method, x, expected_shape)
        return
    if isinstance(expected_shape, dict):
        if isinstance(x, dict):
            for key, value in x.items():
                if key in expected_shape:
                    check_inputs(method, value, expected_shape[key], key=key)
        return
    if not isinstance(x, np.ndarray):
        return
    if x.ndim == 0 or len(x) == 0:
        raise ValueError(
            f"Invalid data for `{method}()`. Expected at least one example. "
            f"Received: x of shape {x.shape}"
        )
    if expected_shape is not None and not _shape_matches(
        expected_shape[1:], x.shape[1:]
    ):
        where = "x" if key is None else f"x[{key!r}]"
        raise ValueError(
            f"Invalid data for `{method}()`. Expected inputs of shape "
            f"{_describe(expected_shape)}, the student's input"
            + ("" if key is None else f" {key!r}")
            + f". Received: {where} of shape {x.shape}"
        )
    if np.issubdtype(x.dtype, np.floating):
        bad = ~np.isfinite(x)
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise ValueError(
                f"Invalid data for `{method}()`. Expected finite inputs. "
                f"Received: x with {int(bad.sum())} NaN or infinite values "
                f"(the first in row {row})"
            )


def _check_dataset(method, dataset, expected_shape):
    if dataset.cardinality() == 0:
        raise ValueError(
            f"Invalid data for `{method}()`. Expected a dataset with at "
            "least one batch. Received: an empty `tf.data.Dataset`"
        )
    spec = dataset.element_spec
    if isinstance(spec, tuple):
        spec = spec[0]
    if isinstance(spec, dict):
        spec = spec.get(INPUT_KEY, spec)
    if isinstance(spec, dict) and isinstance(expected_shape, dict):
        for key, value in spec.items():
            if key in expected_shape and isinstance(value, tf.TensorSpec):
                _check_spec(method, value, expected_shape[key], key)
        return
    if not isinstance(spec, tf.TensorSpec) or not isinstance(
        expected_shape, tuple
    ):
        return
    _check_spec(method, spec, expected_shape, None)


def _check_spec(method, spec, expected_shape, key):
    shape = tuple(spec.shape)
    if shape and not _shape_matches(expected_shape[1:], shape[1:]):
        name = "" if key is None else f" {key!r}"
        raise ValueError(
            f"Invalid data for `{method}()`. Expected batches of shape "
            f"{_describe(expected_shape)}, the student's input{name}. "
            f"Received: a dataset whose inputs{name} have shape "
            f"{_describe(shape)}"
        )


def check_labels(method, x, y, classes):
    """Checks label arrays: one per example, finite, within the classes.

    Integer labels (shape `(n,)` or `(n, 1)`) must lie in
    `[0, classes)`; other labels must be finite.

    Args:
        method: `"fit"` or `"evaluate"`, for the message.
        x: The input array (for its length), or anything else.
        y: The label array; anything but a NumPy array is left to Keras.
        classes: The student's number of outputs, or None.

    Raises:
        ValueError: If the labels do not fit.
    """
    if not isinstance(y, np.ndarray):
        return
    if isinstance(x, np.ndarray) and x.ndim and len(y) != len(x):
        raise ValueError(
            f"Invalid data for `{method}()`. Expected one label per example. "
            f"Received: {len(x)} examples and {len(y)} labels"
        )
    if np.issubdtype(y.dtype, np.integer):
        sparse = y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1)
        if sparse and classes and y.size:
            low, high = int(y.min()), int(y.max())
            if low < 0 or high >= classes:
                raise ValueError(
                    f"Invalid labels for `{method}()`. Expected class indices "
                    f"in [0, {classes}) for the student's {classes} outputs. "
                    f"Received: labels from {low} to {high}"
                )
    elif np.issubdtype(y.dtype, np.floating) and not np.isfinite(y).all():
        raise ValueError(
            f"Invalid labels for `{method}()`. Expected finite values. "
            f"Received: {int((~np.isfinite(y)).sum())} NaN or infinite labels"
        )


AUGMENT_WITH_CACHE = (
    "Invalid data for a Distiller with `augment`. Expected the teacher "
    "online: a teacher cache holds outputs for unaugmented inputs. "
    "Received: batches from a `TeacherCache`"
)


def split_cached(x):
    """`(inputs, cached teacher outputs or None)` from a batch's `x`.

    Batches from `keras_distill.teachers.TeacherCache.dataset` carry the
    teacher's outputs beside the inputs, in a dict.
    """
    if isinstance(x, dict) and TEACHER_KEY in x and INPUT_KEY in x:
        return x[INPUT_KEY], x[TEACHER_KEY]
    return x, None


def first_inputs(x, with_cached=False):
    """Two examples of the inputs in `fit`'s `x` (arrays, a dataset or a
    `PyDataset`), or None when it has no batch.

    With `with_cached=True`, returns `(inputs, cached teacher outputs or
    None)` of the first batch (the whole batch), None when it has none.
    """
    if isinstance(x, (tf.data.Dataset, keras.utils.PyDataset)):
        x = next(iter(x.take(1)), None) if hasattr(x, "take") else x[0]
        if x is None:
            return None
        if isinstance(x, tuple):  # a batch of (x, y[, sample_weight])
            x = keras.utils.unpack_x_y_sample_weight(x)[0]
    x, cached = split_cached(x)
    if with_cached:
        return x, cached
    return keras.tree.map_structure(
        lambda a: a[:2] if isinstance(a, (np.ndarray, tf.Tensor)) else a, x
    )


def _output_classes(model):
    """The last axis of a single-output model's output, or None."""
    outputs = getattr(model, "outputs", None)
    if outputs and len(outputs) == 1:
        return outputs[0].shape[-1]
    return None


def check_data(method, x, y, student, augment=None):
    """Checks what `fit` / `evaluate` / `predict` of a `Distiller` got.

    Args:
        method: `"fit"`, `"evaluate"` or `"predict"`.
        x: The inputs (arrays, a dataset, possibly from a `TeacherCache`).
        y: The labels, or None.
        student: The student `keras.Model`.
        augment: The distiller's augmentation, or None.

    Raises:
        ValueError: If the data does not suit the student, or carries
            cached teacher outputs while `augment` needs the teacher.
    """
    if method == "fit" and augment is not None:
        spec = getattr(x, "element_spec", None)
        if isinstance(x, tf.data.Dataset) and isinstance(spec, tuple):
            spec = spec[0]
        if isinstance(spec, dict) and TEACHER_KEY in spec:
            raise ValueError(AUGMENT_WITH_CACHE)
    inputs, _ = split_cached(x)
    check_inputs(method, inputs, expected_inputs(student))
    check_labels(method, inputs, y, _output_classes(student))


class _LossEpochHooks(keras.callbacks.Callback):
    """Calls `on_epoch_begin` of the losses that change with the epoch."""

    def __init__(self, losses):
        super().__init__()
        self._losses = losses

    def on_epoch_begin(self, epoch, logs=None):
        for loss in self._losses:
            loss.on_epoch_begin(epoch)


@contextlib.contextmanager
def guarded_fit(arguments, losses, nan_policy):
    """The callbacks a `Distiller.fit` adds, and its NaN error.

    Adds to `arguments["callbacks"]` the epoch hooks of the losses that
    change with the epoch (first) and, under `nan_policy="raise"`, a
    `NonFiniteLossGuard` (last); inside the block, a failed in-graph
    `check_finite` becomes a `NonFiniteLossError` naming the term.

    Args:
        arguments: `fit`'s bound arguments (a dict, changed in place).
        losses: The distiller's `DistillationLoss` list.
        nan_policy: `"raise"` or `"ignore"`.
    """
    first, last = [], []
    base = DistillationLoss.on_epoch_begin
    hooked = [x for x in losses if type(x).on_epoch_begin is not base]
    if hooked:
        first.append(_LossEpochHooks(hooked))
    guard = NonFiniteLossGuard() if nan_policy == "raise" else None
    if guard is not None:
        last.append(guard)
    callbacks = arguments.get("callbacks") or []
    if isinstance(callbacks, keras.callbacks.CallbackList):
        for callback in first + last:
            callbacks.append(callback)
    elif first or last:
        arguments["callbacks"] = first + list(callbacks) + last
    try:
        yield
    except Exception as error:
        term = term_from_error(error) if guard is not None else None
        if term is None:
            raise
        raise NonFiniteLossError(
            non_finite_message(term, guard.epoch, guard.batch)
        ) from None


def probe_outputs(teacher_view, student_view, x, preprocessing=None):
    """Warns once for outputs no graph can vouch for that look like
    probabilities (see `keras_distill._views.ModelView.check_probabilities`).

    The first batch of `x` is read once. From a `TeacherCache` the
    teacher is never called: its cached outputs are read (an ensemble's
    members were probed when the cache was built).

    Args:
        teacher_view: The teacher's `ModelView`, or None.
        student_view: The student's `ModelView`.
        x: `fit`'s or `evaluate`'s data.
        preprocessing: The teacher's preprocessing, or None.
    """
    first = None
    for view, role in ((teacher_view, "teacher"), (student_view, "student")):
        if view is None or not view.probes:
            continue
        first = first_inputs(x, with_cached=True) if first is None else first
        if first is None:
            return
        inputs, cached = first
        if role == "teacher" and cached is not None:
            view.check_probabilities(None, chosen=cached)
            continue
        if role == "teacher" and preprocessing is not None:
            inputs = preprocessing(inputs)
        view.check_probabilities(inputs)


def check_labels_given(y, compiled_loss):
    """A supervised loss needs labels in every training batch."""
    if y is None and compiled_loss is not None:
        raise ValueError(
            "Invalid data for `fit()`. Expected (x, y) because the "
            "student's supervised loss needs labels. Received: x without "
            "y. Pass labels, or set student_loss_weight=0 and compile with "
            "loss=None to distill without labels."
        )


def check_cache_serves(teacher_view, losses, cached=None, classes=None):
    """Cached teacher outputs serve losses on the final output only,
    top-k ones the losses that can read them, and a student of `classes`
    outputs (the vocabulary): full logits of another size are refused,
    and top-k indices past the student's last class fail the step.

    Returns:
        `cached`, its top-k indices checked in the graph (outside XLA).
    """
    from keras_distill.losses.divergences import TOP_K_INDICES
    from keras_distill.losses.divergences import is_top_k

    if classes is not None and not is_top_k(cached):
        size = cached.shape[-1] if hasattr(cached, "shape") else None
        if size is not None and int(size) != int(classes):
            raise ValueError(
                "The teacher cache holds logits over "
                f"{int(size)} classes and the student outputs {int(classes)}."
                " Expected a cache of a teacher with the student's classes "
                "(the same vocabulary). Received: a cache of another teacher"
            )
    if classes is not None and is_top_k(cached):
        indices = cached[TOP_K_INDICES]
        check = tf.debugging.assert_less(
            tf.reduce_max(indices),
            tf.cast(classes, indices.dtype),
            message=(
                "The top-k teacher cache holds ids past the vocabulary of "
                f"the student ({int(classes)} classes). Expected a cache of a "
                "teacher with the same vocabulary (the same tokenizer)"
            ),
        )
        with tf.control_dependencies([check]):
            cached = dict(cached, **{TOP_K_INDICES: tf.identity(indices)})
    if is_top_k(cached):
        unable = [type(x).__name__ for x in losses if not x.reads_top_k_teacher]
        if unable:
            raise ValueError(
                "A top-k teacher cache holds the teacher's k largest "
                "logits only. Expected losses that read them "
                "(LogitsDistillation, ReverseKL, GeneralizedJSD). Received: "
                f"{unable}; build the cache without `top_k` for them."
            )
    if teacher_view.features:
        raise ValueError(
            "A teacher cache holds the teacher's outputs only. Expected no "
            "loss on intermediate teacher features with cached data. "
            "Received: losses on teacher layers "
            f"{[x.teacher_layer for x in losses]}"
        )
    return cached
