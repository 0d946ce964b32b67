"""On-policy and sequence-level distillation of causal language models.

A student distilled on the data's tokens never sees its own mistakes,
yet it generates by conditioning on them. With `OnPolicy` (GKD's
on-policy data, Agarwal et al. 2024), a fraction of each training batch
is continued by the student itself, inside the compiled training step:
each chosen row keeps a prompt (its first tokens), the student samples
`new_tokens` after it, the teacher scores the whole sequence, and the
distillation losses compare the two models on the generated positions
only. `SequenceLevel` (Kim and Rush, 2016) lets the teacher generate
instead (greedy by default), and the student also learns the teacher's
tokens with its supervised loss.

Both go to the `Distiller` as `generation=`:

```python
distiller = keras_distill.Distiller(
    teacher,
    student,
    keras_distill.losses.GeneralizedJSD(
        beta=0.5, reduction="mean_with_sample_weight"
    ),
    student_loss_weight=0.0,
    generation=keras_distill.on_policy.OnPolicy(
        fraction=0.5, prompt_length=(8, 24), new_tokens=16
    ),
)
```

The models are causal language models that take a fixed window of
token ids, `(batch, window)`, and return `(batch, window, vocabulary)`
logits (position t predicting token t + 1), or KerasHub `CausalLM`s
with their `{"token_ids", "padding_mask"}` inputs. Generation re-runs the
generating model over the whole window once per new token (no cache):
the shapes stay fixed, so the loop compiles, with XLA too.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_distill import _validation as validation
from keras_distill._sampling import continue_tokens
from keras_distill._sampling import step_seed
from keras_distill._sampling import training_seed  # noqa: F401 (public)

TOKEN_IDS = "token_ids"
PADDING_MASK = "padding_mask"


def token_inputs(x):
    """`(token_ids, padding_mask or None, rebuild)` of a language model's
    inputs: a `(batch, window)` integer tensor or a dict with
    `"token_ids"` (and `"padding_mask"`); `rebuild(tokens, mask)` gives
    inputs of the same structure.

    Raises:
        ValueError: For any other input.
    """
    if isinstance(x, dict) and TOKEN_IDS in x:

        def rebuild(tokens, mask):
            inputs = dict(x, **{TOKEN_IDS: tokens})
            if mask is not None:
                inputs[PADDING_MASK] = mask
            return inputs

        return x[TOKEN_IDS], x.get(PADDING_MASK), rebuild
    if tf.is_tensor(x) and x.dtype.is_integer and x.shape.rank == 2:
        return x, None, lambda tokens, mask: tokens
    raise ValueError(
        "Generation expected a language model's inputs: token ids of shape "
        "(batch, window) as integers, or a dict with 'token_ids' (and "
        f"'padding_mask'), as a KerasHub CausalLM takes. Received: {x!r}"
    )


def _covered(prompts, new_tokens, window):
    """The logit positions that predict the generated tokens:
    `prompt - 1 ... prompt + new_tokens - 2`, as a `(rows, window)` bool."""
    positions = tf.range(window)[None, :]
    return tf.logical_and(
        positions >= prompts[:, None] - 1,
        positions < prompts[:, None] + new_tokens - 1,
    )


class Generation:
    """What `OnPolicy` and `SequenceLevel` share; see the module doc."""

    generator = "student"
    supervises_generated = False

    def __init__(
        self, fraction, prompt_length, new_tokens, temperature, seed,
        teacher_top_k=None, keep_data=False,
    ):
        self.keep_data = validation.check_bool("keep_data", keep_data)
        self.fraction = validation.check_fraction("fraction", fraction)
        self.prompt_length = _check_prompt_length(prompt_length)
        self.new_tokens = validation.check_int("new_tokens", new_tokens, low=1)
        self.temperature = validation.check_non_negative(
            "temperature", temperature
        )
        self.seed = validation.check_int("seed", seed)
        if teacher_top_k is not None:
            validation.check_int("teacher_top_k", teacher_top_k, low=1)
        self.teacher_top_k = teacher_top_k

    def teacher_outputs(self, outputs, losses):
        """The teacher's outputs as `losses` read them: with
        `teacher_top_k`, its logits in the top-k form of a
        `TeacherCache(top_k=k)`, computed in the step."""
        if self.teacher_top_k is None or outputs is None:
            return outputs
        unable = [type(x).__name__ for x in losses if not x.reads_top_k_teacher]
        if unable:
            raise ValueError(
                f"`{type(self).__name__}(teacher_top_k=...)` gives the "
                "losses the teacher's top-k logits. Expected losses that "
                "read them (LogitsDistillation, ReverseKL, GeneralizedJSD). "
                f"Received: {unable}"
            )
        from keras_distill._views import LOGITS
        from keras_distill.losses.divergences import top_k_teacher

        top = top_k_teacher(outputs[LOGITS], self.teacher_top_k)
        return dict(outputs, **{LOGITS: top})

    def refuse_checked(self, cached, losses):
        """Raises if the batch's teacher outputs come from a cache, or if a
        loss takes no sample weights (it would compare every position)."""
        from keras_distill.losses.base import accepts_sample_weight

        unweighted = [
            type(x).__name__ for x in losses if not accepts_sample_weight(x)
        ]
        if unweighted:
            raise ValueError(
                f"`{type(self).__name__}` weighs the generated positions "
                "only. Expected distillation losses that take sample weights "
                "(LogitsDistillation, ReverseKL, GeneralizedJSD). Received: "
                f"{unweighted}, which would compare every position"
            )
        if cached is not None:
            raise ValueError(
                f"Invalid data for a Distiller with `{type(self).__name__}`. "
                "Expected the teacher online: it scores tokens generated in "
                "the step, which a cache cannot hold. Received: batches from "
                "a `TeacherCache`"
            )

    def _rows(self, batch):
        """How many of a batch's rows are generated (the first ones):
        `ceil(fraction · batch)`, so a small batch keeps one."""
        static = tf.get_static_value(batch)
        if static is not None:  # at least one row of a non-empty batch
            return int(np.ceil(self.fraction * int(static)))
        rows = tf.math.ceil(self.fraction * tf.cast(batch, "float32"))
        return tf.cast(rows, "int32")

    def prompts(self, rows, seed):
        """`(rows,)` prompt lengths: the fixed one, or drawn per row from
        `[low, high]` with `step_seed(seed, 0)`."""
        low, high = self.prompt_length
        if low == high:
            return tf.fill([rows], tf.constant(low, "int32"))
        return tf.random.stateless_uniform(
            [rows], step_seed(seed, 0), low, high + 1, dtype="int32"
        )

    def _check_window(self, window):
        window = tf.get_static_value(window)
        longest = self.prompt_length[1] + self.new_tokens
        if window is not None and longest > int(window):
            raise ValueError(
                f"`{type(self).__name__}` writes {self.new_tokens} new tokens "
                f"after prompts of up to {self.prompt_length[1]}: expected a "
                f"window of at least {longest} tokens. Received: a window of "
                f"{int(window)}. Shorten prompt_length or new_tokens."
            )

    def batch(self, logits_fn, x, y, sample_weight, seed):
        """A training batch with its first rows continued by `logits_fn`.

        Args:
            logits_fn: `inputs -> logits` of the generating model (inputs
                as `x` is structured).
            x: The batch's inputs (see `token_inputs`).
            y: The next-token labels, `(batch, window)`, or None.
            sample_weight: None, `(batch,)` or `(batch, window)` weights.
            seed: A stateless seed, shape `(2,)`.

        Returns:
            `(x, y, supervised_weight, distillation_weight)`: the inputs
            with the generated rows, their labels (the generated tokens
            at the covered positions), and `(batch, window)` weights. A
            generated row's distillation weight is 1 (its own weight, for
            per-example weights) on the positions that predict its
            generated tokens and 0 elsewhere (prompt, padding, what
            follows); its supervised weight is the same for
            `SequenceLevel` and 0 for `OnPolicy`. With a padding mask a
            prompt ends at its row's last valid token at the latest. The
            other rows keep their data and weights; with `keep_data`,
            every row of the batch does, after the generated ones.
        """
        tokens, mask, rebuild = token_inputs(x)
        tokens = tf.cast(tokens, "int32")
        batch, window = tf.shape(tokens)[0], tf.shape(tokens)[1]
        self._check_window(tokens.shape[1])
        rows = self._rows(batch)
        kept = 0 if self.keep_data else rows  # the first data row kept
        if self.keep_data:  # other inputs of a dict: the rows copied too
            _, _, rebuild = token_inputs(
                tf.nest.map_structure(
                    lambda t: tf.concat([t[:rows], t], axis=0), x
                )
            )
        prompts = self.prompts(rows, seed)
        # The generated rows alone, every input of theirs (other keys of
        # a dict included).
        _, head_mask, rebuild_head = token_inputs(
            tf.nest.map_structure(lambda t: t[:rows], x)
        )
        if mask is not None:  # a prompt ends at its row's last valid token
            valid = tf.reduce_sum(tf.cast(head_mask, "int32"), axis=1)
            prompts = tf.minimum(prompts, tf.maximum(valid, 1))

        def head_logits(head, head_mask):
            return logits_fn(rebuild_head(head, head_mask))

        head, head_mask = continue_tokens(
            head_logits,
            tokens[:rows],
            prompts,
            self.new_tokens,
            self.temperature,
            seed,
            head_mask,
        )
        new_tokens = tf.concat([head, tokens[kept:]], axis=0)
        new_mask = None
        if mask is not None:
            new_mask = tf.concat([head_mask, mask[kept:]], axis=0)
        covered = _covered(prompts, self.new_tokens, window)
        if y is not None:
            following = tf.concat([head[:, 1:], head[:, -1:]], axis=1)
            labels = tf.where(covered, following, tf.cast(y[:rows], "int32"))
            y = tf.concat([tf.cast(labels, y.dtype), y[kept:]], axis=0)
        base = tf.ones_like(tokens, "float32")
        if sample_weight is not None:
            weight = tf.cast(sample_weight, "float32")
            if weight.shape.rank == 1:
                weight = weight[:, None]
            base = base * weight
        on = tf.cast(covered, "float32")
        if sample_weight is not None and sample_weight.shape.rank == 1:
            on = on * base[:rows]  # a row's own weight
        supervised_on = on if self.supervises_generated else on * 0.0
        distillation = tf.concat([on, base[kept:]], axis=0)
        supervised = tf.concat([supervised_on, base[kept:]], axis=0)
        return rebuild(new_tokens, new_mask), y, supervised, distillation

    def get_config(self):
        low, high = self.prompt_length
        return {
            "fraction": self.fraction,
            "prompt_length": low if low == high else [low, high],
            "new_tokens": self.new_tokens,
            "temperature": self.temperature,
            "seed": self.seed,
            "teacher_top_k": self.teacher_top_k,
            "keep_data": self.keep_data,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        config = self.get_config().items()
        arguments = ", ".join(f"{k}={v!r}" for k, v in config)
        return f"{type(self).__name__}({arguments})"


def _check_prompt_length(value):
    """`(low, high)` from an int or a pair of ints, 1 <= low <= high."""
    pair = value if isinstance(value, (list, tuple)) else (value, value)
    if len(pair) != 2:
        raise ValueError(
            "Invalid value for argument `prompt_length`. Expected an int or "
            f"a pair (low, high) of ints. Received: prompt_length={value!r}"
        )
    low, high = (validation.check_int("prompt_length", v, low=1) for v in pair)
    if low > high:
        raise ValueError(
            "Invalid value for argument `prompt_length`. Expected low <= "
            f"high. Received: prompt_length={value!r}"
        )
    return low, high


@keras.saving.register_keras_serializable(package="keras_distill")
class OnPolicy(Generation):
    """On-policy distillation: the student continues part of each batch.

    In each training step the first `round(fraction · batch)` rows keep
    their first `prompt_length` tokens; the student (`training=False`)
    samples `new_tokens` after them at `temperature`, the teacher scores
    the result, and the distillation losses compare the models on the
    generated positions only (the prompt, padding and the tokens after
    the generated ones weigh 0). These rows have no supervised loss: the
    labels would be the student's own samples. The other rows train as
    without generation; `fraction=0` is exactly the plain step. Sampling
    is seeded by `seed`, the optimizer's step and the replica, so a run
    repeats exactly. Give the losses `reduction="mean_with_sample_weight"`
    for a mean per generated token. Needs the teacher online (no
    `TeacherCache`).

    Args:
        fraction: GKD's λ, in [0, 1]: the share of each batch the student
            continues. Defaults to 0.5.
        prompt_length: The prompt's length in tokens, an int or a pair
            `(low, high)` drawn per row, at least 1. Defaults to 8.
        new_tokens: How many tokens the student writes. Defaults to 16.
        temperature: The sampling temperature; 0 is greedy. Defaults to 1.
        seed: An int seeding the draws. Defaults to 0.
        teacher_top_k: None (the teacher's full distribution), or k: the
            losses get the teacher's k largest logits and its rest mass,
            the form of a `TeacherCache(top_k=k)`, computed in the step
            (the losses' `top_k_form` applies).
        keep_data: If True, the continued rows come in addition to the
            batch (copies of its first rows) instead of replacing them:
            every data row keeps its supervised and distillation losses,
            as MiniLLM keeps a language-modelling loss on data beside its
            on-policy term, at `1 + fraction` times a step's work.
            Defaults to False.

    Raises:
        ValueError: If a value is out of range; at the first batch, if a
            prompt plus `new_tokens` does not fit the window, the inputs
            are not token ids, or a distillation loss takes no sample
            weights (it would compare every position).

    Example:

    ```python
    distiller = keras_distill.Distiller(
        teacher,
        student,
        keras_distill.losses.ReverseKL(reduction="mean_with_sample_weight"),
        student_loss_weight=0.0,
        generation=keras_distill.on_policy.OnPolicy(
            fraction=1.0, prompt_length=8, new_tokens=16
        ),
    )
    distiller.compile("adam")
    distiller.fit(tokens, next_tokens, epochs=3)
    ```
    """

    def __init__(
        self, fraction=0.5, prompt_length=8, new_tokens=16, temperature=1.0,
        seed=0, teacher_top_k=None, keep_data=False,
    ):
        super().__init__(
            fraction, prompt_length, new_tokens, temperature, seed,
            teacher_top_k, keep_data,
        )


@keras.saving.register_keras_serializable(package="keras_distill")
class SequenceLevel(Generation):
    """Sequence-level distillation: the teacher continues each batch.

    As `OnPolicy`, but the teacher writes the tokens (greedy at the
    default `temperature=0`, Kim and Rush's sequence-level KD), and the
    student's supervised loss also covers them, with the generated tokens
    as labels, on the generated positions only.

    Args:
        fraction: The share of each batch the teacher continues, in
            [0, 1]. Defaults to 1.
        prompt_length: The prompt's length, an int or a pair
            `(low, high)` drawn per row. Defaults to 8.
        new_tokens: How many tokens the teacher writes. Defaults to 16.
        temperature: 0 (greedy, the default) or a sampling temperature.
        seed: An int seeding the draws. Defaults to 0.
        teacher_top_k: As for `OnPolicy`.
        keep_data: As for `OnPolicy`.

    Raises:
        ValueError: As for `OnPolicy`.

    Example:

    ```python
    distiller = keras_distill.Distiller(
        teacher,
        student,
        keras_distill.losses.LogitsDistillation(
            temperature=1.0, reduction="mean_with_sample_weight"
        ),
        generation=keras_distill.on_policy.SequenceLevel(new_tokens=16),
    )
    distiller.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    distiller.fit(tokens, next_tokens, epochs=3)
    ```
    """

    generator = "teacher"
    supervises_generated = True

    def __init__(
        self, fraction=1.0, prompt_length=8, new_tokens=16, temperature=0.0,
        seed=0, teacher_top_k=None, keep_data=False,
    ):
        super().__init__(
            fraction, prompt_length, new_tokens, temperature, seed,
            teacher_top_k, keep_data,
        )


def online(generation, outputs, distiller):
    """A distiller's online teacher outputs as its losses read them (see
    `Generation.teacher_outputs`)."""
    if generation is None:
        return outputs
    return generation.teacher_outputs(outputs, distiller._distill_losses)


def check_generation(value):
    """None, or an `OnPolicy` / `SequenceLevel` (raises otherwise)."""
    if value is None or isinstance(value, Generation):
        return value
    raise ValueError(
        "Invalid value for argument `generation`. Expected None, a "
        "`keras_distill.on_policy.OnPolicy` or a `SequenceLevel`. "
        f"Received: generation={value!r}"
    )


def sample(
    model, x, prompt_length, new_tokens, temperature=1.0, seed=0
):
    """Continues each row's prompt with tokens `model` samples.

    What `OnPolicy` does inside a training step, for measuring what a
    model generates: every row keeps its first `prompt_length` tokens and
    gets `new_tokens` sampled ones after them (greedy at temperature 0).

    Args:
        model: A causal language model (see the module doc), returning
            logits.
        x: `(batch, window)` int token ids, or a KerasHub CausalLM's dict.
        prompt_length: An int, or a `(batch,)` array of lengths.
        new_tokens: How many tokens to write.
        temperature: The sampling temperature; 0 is greedy.
        seed: An int, or a stateless seed of shape `(2,)`.

    Returns:
        The `(batch, window)` token ids as a NumPy array; for a dict
        input with a `padding_mask`, a dict of the new `token_ids` and
        `padding_mask`.

    Example:

    ```python
    continued = keras_distill.on_policy.sample(
        student, validation_tokens[:256], prompt_length=16, new_tokens=32
    )
    ```
    """
    validation.check_int("new_tokens", new_tokens, low=1)
    if np.min(prompt_length) < 1:
        raise ValueError(
            "Invalid value for argument `prompt_length`. Expected at least 1 "
            f"token. Received: prompt_length={prompt_length!r}"
        )
    if isinstance(x, dict):
        x = {k: tf.convert_to_tensor(v) for k, v in x.items()}
    else:
        x = tf.convert_to_tensor(x)
    tokens, mask, rebuild = token_inputs(x)
    window = tokens.shape[1]
    if window is not None and np.max(prompt_length) + new_tokens > window:
        raise ValueError(
            f"`sample` writes {new_tokens} tokens after prompts of up to "
            f"{int(np.max(prompt_length))}: expected a window of at least "
            f"{int(np.max(prompt_length)) + new_tokens} tokens. Received: a "
            f"window of {window}"
        )
    rows = tf.shape(tokens)[0]
    prompts = tf.broadcast_to(tf.cast(prompt_length, "int32"), [rows])
    if np.ndim(seed) == 0:
        seed = [validation.check_int("seed", seed), 0]

    @tf.function
    def run(tokens, mask, prompts, seed):
        return continue_tokens(
            lambda t, m: model(rebuild(t, m), training=False),
            tokens,
            prompts,
            new_tokens,
            temperature,
            seed,
            mask,
        )

    tokens, mask = run(tokens, mask, prompts, tf.constant(seed, "int64"))
    if mask is None:
        return tokens.numpy()
    return {TOKEN_IDS: tokens.numpy(), PADDING_MASK: mask.numpy()}
