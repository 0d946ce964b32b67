"""Input signatures: `InputSpecs` (a model's input names, shapes and
dtypes), and the data an export is calibrated and checked on, fed by them.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_distill import _hub as hub
from keras_distill._utils import input_shape as _model_input_shape


class InputSpecs:
    """A model's inputs: names, shapes and dtypes, and how to feed them.

    Attributes:
        kind: `"single"`, `"list"` or `"dict"`, as the model takes them.
        names: The signature's input names, in the model's order.
        shapes: Shapes (batch axis first) by name.
        dtypes: dtypes by name (`"float32"`, `"int32"`, ...).
    """

    def __init__(self, kind, names, shapes, dtypes):
        self.kind = kind
        self.names = list(names)
        self.shapes = dict(shapes)
        self.dtypes = dict(dtypes)

    @classmethod
    def of(cls, model, sequence_length=None):
        """The specs of a built model, or None if a shape is unknown.

        Args:
            model: A built `keras.Model`.
            sequence_length: Fills an unknown length on the first axis
                after the batch (token inputs of any length).
        """
        try:
            inputs = model.input
        except (AttributeError, ValueError):
            inputs = None
        if inputs is None or isinstance(model, keras.Sequential):
            shape = _model_input_shape(model)
            if shape is None:
                return None
            dtype = _dtype(getattr(model, "inputs", None) or [None])
            inputs, kind = {"inputs": (shape, dtype)}, "single"
        elif isinstance(inputs, dict):
            kind = "dict"
            inputs = {
                k: (tuple(v.shape), _dtype([v])) for k, v in inputs.items()
            }
        elif isinstance(inputs, (list, tuple)):
            kind = "list"
            inputs = {t.name: (tuple(t.shape), _dtype([t])) for t in inputs}
        else:
            kind = "single"
            inputs = {"inputs": (tuple(inputs.shape), _dtype([inputs]))}
        if sequence_length is not None:
            inputs = {
                k: (_with_length(shape, sequence_length), dtype)
                for k, (shape, dtype) in inputs.items()
            }
        for shape, _ in inputs.values():
            if any(d is None for d in shape[1:]):
                return None
        return cls(
            kind,
            inputs,
            {k: v[0] for k, v in inputs.items()},
            {k: v[1] for k, v in inputs.items()},
        )

    def signature(self):
        """The `input_signature` for `keras.Model.export`."""
        specs = {
            name: tf.TensorSpec(self.shapes[name], self.dtypes[name], name)
            for name in self.names
        }
        if self.kind == "single":
            return [specs[self.names[0]]]
        if self.kind == "list":
            return [[specs[name] for name in self.names]]
        return [specs]

    def by_name(self, x):
        """Inputs as a dict by signature name, each in its dtype."""
        if self.kind == "dict":
            if not isinstance(x, dict):
                raise ValueError(
                    "Invalid data. Expected a dict of inputs with the keys "
                    f"{self.names}. Received: {type(x).__name__}"
                )
            x = {k: x[k] for k in self.names}
        elif self.kind == "list":
            x = dict(zip(self.names, x))
        else:
            x = {self.names[0]: x}
        return {k: np.asarray(v).astype(self.dtypes[k]) for k, v in x.items()}

    def as_model_input(self, named):
        """The dict of `by_name` back in the structure the model takes."""
        if self.kind == "dict":
            return named
        if self.kind == "list":
            return [named[k] for k in self.names]
        return named[self.names[0]]

    def zeros(self, batch=1):
        """A batch of zeros of every input, by name."""
        return {
            k: np.zeros((batch,) + tuple(self.shapes[k][1:]), self.dtypes[k])
            for k in self.names
        }


def _with_length(shape, length):
    if len(shape) > 1 and shape[1] is None:
        return (shape[0], length) + tuple(shape[2:])
    return shape


def _dtype(tensors):
    tensor = tensors[0] if tensors else None
    return str(getattr(tensor, "dtype", None) or "float32")


def examples(data, specs, limit=None, feed=None):
    """Inputs by signature name (and labels when present) from many forms.

    Args:
        data: An array or a dict of arrays, `(x, y)`, a `tf.data.Dataset`
            of `x` or `(x, y)` batches.
        specs: The model's `InputSpecs`.
        limit: Keep at most this many examples.
        feed: None, or a function that turns raw inputs (strings) into
            the model's (token ids); applied to strings only.

    Returns:
        `(inputs by name, labels or None)`.
    """
    labels = None
    if isinstance(data, str):
        raise TypeError(
            "Invalid data. Expected an array, `(x, y)` arrays or a "
            f"tf.data.Dataset. Received: the string {data!r}. For a named "
            "dataset, load it first: `keras_distill.app.datasets."
            "load_arrays(name).x_test`."
        )
    if isinstance(data, tuple) and len(data) == 2:
        x, labels = data[0], np.asarray(data[1])
    elif isinstance(data, (np.ndarray, dict, list)):
        x = data
    else:
        xs, ys = [], []
        count = 0
        for batch in data:
            if isinstance(batch, tuple):
                xs.append(batch[0])
                if len(batch) > 1:
                    ys.append(np.asarray(batch[1]))
            else:
                xs.append(batch)
            count += len(keras.tree.flatten(xs[-1])[0])
            if limit and count >= limit:
                break
        if not xs:
            raise ValueError("Invalid data. Expected examples. Received: none")
        x = keras.tree.map_structure(
            lambda *parts: np.concatenate([np.asarray(p) for p in parts]),
            *xs,
        )
        labels = np.concatenate(ys) if ys else None
    if feed is not None and hub.is_raw(x):
        if limit and isinstance(x, (list, tuple, np.ndarray)):
            x = x[:limit]
        x = feed(x)
        if labels is not None and limit:
            labels = labels[:limit]
    named = specs.by_name(x)
    if limit:
        named = {k: v[:limit] for k, v in named.items()}
        labels = labels[:limit] if labels is not None else None
    if labels is not None and labels.ndim > 1:
        labels = labels.argmax(axis=-1)
    return named, labels


def random_inputs(rng, shape, dtype):
    """Random inputs of a shape and dtype: 0 or 1 for integer inputs."""
    if np.issubdtype(np.dtype(dtype), np.integer):
        return rng.integers(0, 2, shape).astype(dtype)
    return rng.random(shape).astype(dtype)
