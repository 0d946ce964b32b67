"""`generate`: greedy decoding with a causal language model of a fixed
window, in Keras or in the LiteRT interpreter.
"""

import keras
import numpy as np

from keras_distill.export._runner import Runner
from keras_distill.validation import check_int


def generate(model, prompt, max_new_tokens, pad_id=0):
    """Greedy decoding with a causal LM of a fixed window, in Keras or LiteRT.

    The model takes `(batch, window)` int token ids and returns
    `(batch, window, vocabulary)` logits, position n seeing tokens 0..n
    only (a causal model), as a language model exported to TFLite does:
    its input has a fixed length. The prompt is placed at the start of
    the window, padded with `pad_id`; the next token is the argmax of the
    logits at the prompt's last position. Past the window, its last
    `window` tokens are kept (a sliding window).

    Args:
        model: A `keras.Model`, a `.tflite` path or a `Runner`.
        prompt: A non-empty sequence of int token ids.
        max_new_tokens: How many tokens to generate (an int >= 0).
        pad_id: The token that fills the window after the prompt.

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
        window = model.inputs[0].shape[1]

        def next_logits(ids):
            return keras.ops.convert_to_numpy(model(ids, training=False))

    else:
        runner = model if isinstance(model, Runner) else Runner(model)
        window = int(runner._inputs[runner.input_names[0]]["shape"][1])
        next_logits = runner.predict
    if not window:
        raise ValueError(
            "Invalid model for `generate`. Expected an input of a fixed "
            "window length, (batch, window). Received: an input of shape "
            f"{tuple(model.inputs[0].shape)}"
        )
    for _ in range(max_new_tokens):
        context = tokens[-window:]
        ids = np.full((1, window), pad_id, np.int32)
        ids[0, : len(context)] = context
        logits = next_logits(ids)
        tokens.append(int(np.argmax(logits[0, len(context) - 1])))
    return tokens
