"""The model an export converts, and how the user's data reaches it.

- A `Distiller` gives its student (never the teacher).
- A model that takes strings cannot run in LiteRT's builtin ops (a phone
  feeds token ids): one whose string input goes straight into a
  `TextVectorization(output_mode="int", output_sequence_length=N)` is
  exported from its token ids (int32 `(batch, N)`, input `token_ids`), its
  vocabulary written beside the file, and the check data (strings) is
  tokenized by the same layer; any other string model is refused before
  converting, with the way out.
- A KerasHub task (a `CausalLM`, a classifier) takes a dict of token ids
  and a padding mask of any length: it is exported at `sequence_length`
  (its preprocessor's by default), raw strings in the check data go
  through its preprocessor, and the parity check reads valid positions
  only (`padding_mask`).
- A mixed-precision model is replaced by its float32 twin.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from keras_distill import _hub as hub
from keras_distill._utils import input_shape as _model_input_shape
from keras_distill.distiller import Distiller
from keras_distill.export._float32_twin import float32_compute
from keras_distill.export._specs import InputSpecs

TOKEN_IDS = "token_ids"
PADDING_MASK = "padding_mask"


@dataclasses.dataclass
class Prepared:
    """What an export converts.

    Attributes:
        model: The Keras model to convert (float32 compute).
        specs: Its `InputSpecs` (every shape fixed but the batch).
        feed: None, or a function from the user's inputs (strings) to
            the model's (token ids), applied to raw data only.
        vocabulary: The token strings by id of a split-off
            `TextVectorization`, written beside the file; else None.
        mask: The input that marks valid positions, or None.
    """

    model: object
    specs: object
    feed: object = None
    vocabulary: object = None
    mask: object = None


def prepare(model, sequence_length=None):
    """The `Prepared` export of `model` (see the module docstring).

    Raises:
        ValueError: For something that is not a model, a string model
            that cannot be exported from token ids, or an input whose
            shape stays unknown.
    """
    if isinstance(model, Distiller):
        model = model.student
    if not isinstance(model, keras.Model):
        raise ValueError(
            "Invalid value for argument `model`. Expected a `keras.Model` "
            "or a `keras_distill.Distiller`. Received: "
            f"model={model!r} of type {type(model).__name__}"
        )
    if sequence_length is not None and (
        isinstance(sequence_length, bool)
        or not isinstance(sequence_length, int)
        or sequence_length < 1
    ):
        raise ValueError(
            "Invalid value for argument `sequence_length`. Expected a "
            f"positive int. Received: sequence_length={sequence_length!r}"
        )
    prepared = Prepared(model, None)
    strings = _string_inputs(model)
    if strings:
        prepared = _from_token_ids(model, strings)
    elif hub.has_preprocessor(model):
        if sequence_length is None:
            sequence_length = getattr(
                model.preprocessor, "sequence_length", None
            )
        prepared.feed = _hub_feed(model, sequence_length)
        prepared.mask = PADDING_MASK
        # The task's graph alone: its preprocessor (the tokenizer's string
        # tables) stays out of the file, as an app tokenizes itself.
        prepared.model = keras.Model(
            model.input, model.output, name=f"{model.name}_from_token_ids"
        )
    specs = InputSpecs.of(prepared.model, sequence_length)
    if specs is None:
        raise ValueError(
            "Invalid value for argument `model`. Expected a model with a "
            "defined input shape (a Functional or Sequential model, or a "
            "subclassed model built with `model.build(input_shape)`), or "
            "`sequence_length=` for inputs of any length. Received: "
            f"{model.name!r} with input shape {_shapes(prepared.model)}"
        )
    prepared.specs = specs
    prepared.model = float32_compute(prepared.model)
    if prepared.mask not in specs.names:
        prepared.mask = None
    return prepared


def _shapes(model):
    inputs = getattr(model, "input", None)
    if isinstance(inputs, dict):
        return {k: tuple(v.shape) for k, v in inputs.items()}
    return _model_input_shape(model)


def _string_inputs(model):
    try:
        inputs = model.inputs or []
    except (AttributeError, ValueError):
        return []
    return [t for t in inputs if str(t.dtype) == "string"]


def _vectorizer_of(model, tensor):
    """The `TextVectorization` layer that reads `tensor`, or None."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.TextVectorization):
            try:
                if layer.input is tensor:
                    return layer
            except (AttributeError, ValueError):
                continue
    return None


def _refuse_strings(model, tensor, why):
    raise ValueError(
        f"Invalid value for argument `model`. The model {model.name!r} "
        f"takes strings (input {tensor.name!r}, dtype string), which "
        "LiteRT's builtin ops cannot read: an app feeds token ids. "
        "Expected a string input that goes straight into a "
        "`keras.layers.TextVectorization(output_mode='int', "
        "output_sequence_length=N)` layer (then the model is exported from "
        f"its token ids, its vocabulary beside the file). Received: {why}. "
        "Or export a model that takes token ids: "
        "`keras.Model(vectorizer.output, model.output)`."
    )


def _from_token_ids(model, strings):
    """The part of a string model after its `TextVectorization`."""
    if len(model.inputs) != 1:
        _refuse_strings(
            model, strings[0], f"{len(model.inputs)} inputs, one a string"
        )
    tensor = strings[0]
    vectorizer = _vectorizer_of(model, tensor)
    if vectorizer is None:
        _refuse_strings(
            model, tensor, "no TextVectorization layer reads that input"
        )
    config = vectorizer.get_config()
    if config.get("output_mode") != "int" or not config.get(
        "output_sequence_length"
    ):
        _refuse_strings(
            model,
            tensor,
            f"TextVectorization {vectorizer.name!r} with output_mode="
            f"{config.get('output_mode')!r}, output_sequence_length="
            f"{config.get('output_sequence_length')!r}",
        )
    length = int(config["output_sequence_length"])
    rest = keras.Model(vectorizer.output, model.outputs, name="after_tokens")
    ids = keras.Input((length,), dtype="int32", name=TOKEN_IDS)
    outputs = rest(keras.ops.cast(ids, vectorizer.output.dtype))
    if isinstance(outputs, (list, tuple)) and len(outputs) == 1:
        outputs = outputs[0]
    tokens = keras.Model(
        {TOKEN_IDS: ids}, outputs, name=f"{model.name}_from_token_ids"
    )

    def feed(x):
        ids = vectorizer(tf.constant(np.asarray(x, object)))
        return {TOKEN_IDS: np.asarray(ids, np.int32)}

    return Prepared(
        tokens, None, feed=feed, vocabulary=vectorizer.get_vocabulary()
    )


def _hub_feed(model, length):
    """Raw strings through a KerasHub task's preprocessor (its `x`), cut
    or padded (with zeros, masked out) to the exported length."""

    def fit(value):
        value = np.asarray(value)
        if length is None or value.ndim < 2:
            return value
        if value.shape[1] >= length:
            return value[:, :length]
        pad = [(0, 0), (0, length - value.shape[1])]
        return np.pad(value, pad + [(0, 0)] * (value.ndim - 2))

    def feed(x):
        batch = model.preprocessor(tf.constant(np.asarray(x, object)))
        inputs = batch[0] if isinstance(batch, tuple) else batch
        return {k: fit(v) for k, v in inputs.items()}

    return feed


def is_raw(x):
    """Whether inputs are strings (so `feed` applies)."""
    return hub.is_raw(x)
