"""`generate`: greedy decoding with a causal language model of a fixed
window, in Keras or in the LiteRT interpreter.
"""

import keras
import numpy as np

from keras_distill._validation import check_int
from keras_distill.export._prepared import PADDING_MASK
from keras_distill.export._prepared import TOKEN_IDS
from keras_distill.export._runner import Runner


def generate(model, prompt, max_new_tokens, pad_id=0, window=None):
    """Greedy decoding with a causal LM of a fixed window, in Keras or LiteRT.

    The model takes `(batch, window)` int token ids and returns
    `(batch, window, vocabulary)` logits, position n seeing tokens 0..n
    only (a causal model), as a language model exported to TFLite does:
    its input has a fixed length. The prompt is placed at the start of
    the window, padded with `pad_id`; the next token is the argmax of the
    logits at the prompt's last position. Past the window, its last
    `window` tokens are kept (a sliding window).

    A KerasHub `CausalLM` (or its `.tflite` file from
    `keras_distill.export.tflite`) is taken as it is: it is fed its
    `token_ids` and a `padding_mask` that marks the prompt's positions,
    and its window is its preprocessor's `sequence_length` (or
    `window`). Its tokenizer turns text into the prompt and back:
    `model.preprocessor.tokenizer(text)` and `.detokenize(tokens)`.

    Args:
        model: A `keras.Model` (a KerasHub `CausalLM` included), a
            `.tflite` path or a `Runner`.
        prompt: A non-empty sequence of int token ids.
        max_new_tokens: How many tokens to generate (an int >= 0).
        pad_id: The token that fills the window after the prompt.
        window: The window of a Keras model whose input length is not
            fixed (default: a KerasHub task's preprocessor's
            `sequence_length`); ignored for a `.tflite` file.

    Returns:
        The list of token ids: the prompt, then the generated tokens.

    Raises:
        ValueError: If the prompt is empty, `max_new_tokens` is negative, or
            the model's input has no fixed window length.

    Example:

    ```python
    tokens = keras_distill.export.generate(
        "saved_models/student_lm.tflite", list(b"def "), max_new_tokens=40
    )
    print(bytes(tokens).decode(errors="replace"))
    ```
    """
    check_int("max_new_tokens", max_new_tokens)
    tokens = [int(t) for t in prompt]
    if not tokens:
        raise ValueError(
            "Invalid value for argument `prompt`. Expected at least one "
            "token id. Received: prompt=[]"
        )
    if isinstance(model, keras.Model):
        masked = isinstance(getattr(model, "input", None), dict)
        fixed = _ids_input(model).shape[1]
        preprocessor = getattr(model, "preprocessor", None)
        window = (
            fixed or window or getattr(preprocessor, "sequence_length", None)
        )
        shape = tuple(_ids_input(model).shape)

        def next_logits(inputs):
            return keras.ops.convert_to_numpy(model(inputs, training=False))

    else:
        runner = model if isinstance(model, Runner) else Runner(model)
        masked = PADDING_MASK in runner.input_names
        name = TOKEN_IDS if masked else runner.input_names[0]
        window = int(runner._inputs[name]["shape"][1])
        shape = tuple(runner._inputs[name]["shape"])
        next_logits = runner.predict
    if not window:
        raise ValueError(
            "Invalid model for `generate`. Expected an input of a fixed "
            "window length, (batch, window), or `window=`. Received: an "
            f"input of shape {shape}"
        )
    for _ in range(max_new_tokens):
        context = tokens[-window:]
        ids = np.full((1, window), pad_id, np.int32)
        ids[0, : len(context)] = context
        inputs = ids
        if masked:
            mask = np.zeros((1, window), np.int32)
            mask[0, : len(context)] = 1
            inputs = {TOKEN_IDS: ids, PADDING_MASK: mask}
        logits = next_logits(inputs)
        tokens.append(int(np.argmax(logits[0, len(context) - 1])))
    return tokens


def _ids_input(model):
    """The token ids input of a model (by name in a dict input)."""
    inputs = model.input
    if isinstance(inputs, dict):
        return inputs[TOKEN_IDS]
    return model.inputs[0]
