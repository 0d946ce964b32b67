"""KerasHub tasks in a `Distiller`: raw data through the student's
preprocessor, as `keras_hub` models do in their own `fit`.

A `keras_hub.models.CausalLM` (or any KerasHub task) carries a
`preprocessor` that turns raw strings into token ids, labels and sample
weights: for a causal LM the labels are the inputs shifted by one token
and the sample weights its padding mask, shifted the same way. When the
student is such a task and `fit` / `evaluate` / `predict` get raw data
(strings, or a dataset of them), the distiller maps the student's
`preprocess_samples` over it first, exactly as `keras_hub` does. The
teacher then reads the same token ids, so teacher and student must share
a tokenizer. Nothing is shifted again: the logits at position n of both
models are compared, and the label of position n is token n + 1, already.

Data that is already preprocessed (token ids) is passed on as it is.
`keras_hub` itself is never imported here.
"""

import keras
import numpy as np
import tensorflow as tf


def has_preprocessor(model):
    """Whether `model` is a KerasHub task with a preprocessor."""
    return getattr(model, "preprocessor", None) is not None and callable(
        getattr(model, "preprocess_samples", None)
    )


def _is_text(structure):
    leaves = keras.tree.flatten(structure)
    return bool(leaves) and all(_text_leaf(a) for a in leaves)


def _text_leaf(value):
    if isinstance(value, tf.TensorSpec):
        return value.dtype == tf.string
    if isinstance(value, (str, bytes)):
        return True
    if isinstance(value, tf.Tensor):
        return value.dtype == tf.string
    array = np.asarray(value) if isinstance(value, (list, tuple)) else value
    return isinstance(array, np.ndarray) and array.dtype.kind in "USO"


def is_raw(x):
    """Whether `x` holds raw text (strings), not token ids."""
    if isinstance(x, tf.data.Dataset):
        spec = x.element_spec
        return _is_text(spec[0] if isinstance(spec, tuple) else spec)
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], (str, bytes)):
        return True
    return x is not None and _is_text(x)


def preprocess(model, x, y=None, sample_weight=None, batch_size=None):
    """Raw data as batches of the task's `(x, y, sample_weight)`.

    Args:
        model: A KerasHub task with a preprocessor (the student).
        x: Strings (a list or an array) or a `tf.data.Dataset` of string
            batches (`x`, `(x, y)` or `(x, y, sample_weight)`).
        y: Labels, for arrays.
        sample_weight: Sample weights, for arrays.
        batch_size: Batch size, for arrays (Keras' default, 32, when None).

    Returns:
        A `tf.data.Dataset` of preprocessed batches.
    """
    if not isinstance(x, tf.data.Dataset):
        if isinstance(x, (list, tuple)):
            x = np.asarray(x)
        packed = keras.utils.pack_x_y_sample_weight(x, y, sample_weight)
        if not isinstance(packed, tuple):
            packed = (packed,)
        x = tf.data.Dataset.from_tensor_slices(packed).batch(batch_size or 32)

    def apply(*batch):
        return model.preprocess_samples(*batch)

    return x.map(apply, num_parallel_calls=tf.data.AUTOTUNE).prefetch(
        tf.data.AUTOTUNE
    )


def preprocess_arguments(model, arguments):
    """Raw data in `fit` / `evaluate` / `predict` arguments through a
    KerasHub task's preprocessor, in place.

    When `model` (the student) is a task with a preprocessor and
    `arguments["x"]` holds strings, `x` becomes the dataset of `preprocess`
    and `y`, `sample_weight` and `batch_size` are taken out (they are in
    its batches). Token ids and models without a preprocessor are left as
    they are.

    Args:
        model: The student.
        arguments: The bound arguments of the call (a dict).
    """
    if has_preprocessor(model) and is_raw(arguments.get("x")):
        arguments["x"] = preprocess(
            model,
            arguments["x"],
            arguments.pop("y", None),
            arguments.pop("sample_weight", None),
            arguments.pop("batch_size", None),
        )


def vocabulary_of(model):
    """The token list of a KerasHub task's tokenizer, or None for a model
    without one."""
    tokenizer = getattr(getattr(model, "preprocessor", None), "tokenizer", None)
    get = getattr(tokenizer, "get_vocabulary", None)
    if not callable(get):
        return None
    try:
        mapping = getattr(tokenizer, "vocabulary", None)
        if isinstance(mapping, dict):  # byte-pair: token -> id, any order
            return [t for t, _ in sorted(mapping.items(), key=lambda i: i[1])]
        return list(get())  # WordPiece, SentencePiece: in id order
    except (ValueError, RuntimeError, AttributeError):  # not yet loaded
        return None


def check_same_tokenizer(teacher, student):
    """Raises if the teacher's and the student's tokenizers (KerasHub
    tasks) hold different vocabularies: token-level losses compare the
    two models' logits token id by token id.

    Raises:
        ValueError: Naming the first token id whose tokens differ, or
            both sizes.
    """
    teacher_tokens, student_tokens = vocabulary_of(teacher), vocabulary_of(
        student
    )
    if None in (teacher_tokens, student_tokens):
        return
    if teacher_tokens == student_tokens:
        return
    sizes = (
        f"(vocabularies of {len(teacher_tokens)} and {len(student_tokens)} "
        "tokens)"
    )
    for index, (a, b) in enumerate(zip(teacher_tokens, student_tokens)):
        if a != b:
            found = (
                f"token id {index} is {a!r} for the teacher and {b!r} for "
                f"the student {sizes}"
            )
            break
    else:
        found = f"one vocabulary extends the other {sizes}"
    raise ValueError(
        "Invalid teacher and student. Expected the same tokenizer: a "
        "token-level distillation loss compares the two models' logits "
        f"token id by token id. Received: {found}. Give the student the "
        "teacher's tokenizer (and its vocabulary size)."
    )
