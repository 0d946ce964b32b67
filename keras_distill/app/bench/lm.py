"""The language-model benchmark behind `keras-distill bench lm`.

Offline, on the English documentation every Python ships with
(`pydoc_data.topics`, about 465,000 characters in 79 documents), split by
document (every tenth for validation). A WordPiece vocabulary is trained
on the training split (`keras_hub.tokenizers`, the `hub` extra), and the
text cut into windows of `WINDOW` tokens. A decoder-only Transformer
teacher and a much smaller student (`decoder_lm`) are trained per seed:

- `teacher`, `scratch` (the student from the next tokens alone);
- `forward` (KD: `LogitsDistillation` at T = 1), `reverse` (`ReverseKL`),
  `jsd` (GKD's `GeneralizedJSD(0.5)`), the teacher online;
- `top{k}_{form}`: forward KD from a `TeacherCache(top_k=k)`, for k in
  `TOP_K` and both top-k forms (`keras_distill.losses.divergences`).

Every student mixes the cross-entropy on the next tokens and its
distillation term at `ALPHA`, reads the same batches in the same order,
and is scored by its validation cross-entropy per token (nats) and
perplexity. The `forward` student of the first seed is exported to TFLite
(float32 and dynamic-range int8): file size, milliseconds per token
(one thread) and the share of validation tokens whose next-token argmax
agrees with Keras.
"""

import os
import statistics
import tempfile
import time

import keras
import numpy as np

from keras_distill import losses
from keras_distill._utils import optional_import
from keras_distill._utils import predict
from keras_distill.app.environment import versions
from keras_distill.app.report import format_table
from keras_distill.distiller import Distiller
from keras_distill.pipelines import pipeline
from keras_distill.teachers import TeacherCache

WINDOW = 64
VOCABULARY = 2048
TEACHER = dict(dim=128, layers=2, heads=4)
STUDENT = dict(dim=48, layers=1, heads=2)
ALPHA = 0.5
TOP_K = (8, 32)
FORMS = ("rest", "renormalized")
ONLINE = {
    "forward": lambda: losses.LogitsDistillation(1.0),
    "reverse": lambda: losses.ReverseKL(),
    "jsd": lambda: losses.GeneralizedJSD(0.5),
}
# A tiny configuration for tests: a few windows, small models.
QUICK = dict(
    window=16,
    vocabulary=300,
    teacher=dict(dim=16, layers=1, heads=2),
    student=dict(dim=8, layers=1, heads=1),
    windows=48,
    top_k=(4,),
)


def corpus():
    """`(training texts, validation texts)`: every tenth document of
    `pydoc_data.topics` (sorted by name) is for validation."""
    from pydoc_data.topics import topics

    names = sorted(topics)
    train = [topics[n] for i, n in enumerate(names) if i % 10 != 5]
    validation = [topics[n] for i, n in enumerate(names) if i % 10 == 5]
    return train, validation


def word_piece_tokenizer(texts, size):
    """A WordPiece tokenizer (`keras_hub`) trained on `texts`."""
    keras_hub = optional_import("keras_hub", "hub", "The LM benchmark")
    import tensorflow as tf

    vocabulary = keras_hub.tokenizers.compute_word_piece_vocabulary(
        tf.data.Dataset.from_tensor_slices(texts),
        vocabulary_size=size,
        lowercase=False,
        strip_accents=False,
        reserved_tokens=["[PAD]", "[UNK]"],
    )
    return keras_hub.tokenizers.WordPieceTokenizer(
        vocabulary=vocabulary, lowercase=False, strip_accents=False
    )


def windows(tokenizer, texts, window):
    """`(x, y)`: consecutive windows of the texts' tokens and the next
    token of each position (int32 `(n, window)`)."""
    stream = np.concatenate(
        [np.asarray(tokenizer(t)).astype("int32") for t in texts]
    )
    n = (len(stream) - 1) // window
    x = stream[: n * window].reshape(n, window)
    y = stream[1 : n * window + 1].reshape(n, window)
    return x, y


@keras.saving.register_keras_serializable(package="keras_distill")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned embedding of each position to its features.

    Args:
        length: The number of positions.
        seed: Optional initializer seed.
        **kwargs: Passed on to `keras.layers.Layer`.
    """

    def __init__(self, length, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.length = length
        self.seed = seed

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            shape=(self.length, input_shape[-1]),
            initializer=keras.initializers.GlorotUniform(seed=self.seed),
            name="embeddings",
        )

    def call(self, features):
        steps = keras.ops.shape(features)[1]
        return features + self.embeddings[None, :steps]

    def get_config(self):
        config = super().get_config()
        config.update(length=self.length, seed=self.seed)
        return config


def decoder_lm(vocabulary, window, dim, layers, heads, seed, name):
    """A decoder-only Transformer: token and position embeddings, `layers`
    pre-norm blocks of causal self-attention and an MLP, logits out."""
    init = keras.initializers.GlorotUniform(seed=seed)
    tokens = keras.Input((window,), dtype="int32", name="tokens")
    h = keras.layers.Embedding(vocabulary, dim, embeddings_initializer=init)(
        tokens
    )
    h = PositionEmbedding(window, seed=seed)(h)
    for i in range(layers):
        a = keras.layers.LayerNormalization(name=f"{name}_ln{i}a")(h)
        a = keras.layers.MultiHeadAttention(
            heads, dim // heads, kernel_initializer=init, name=f"{name}_att{i}"
        )(a, a, use_causal_mask=True)
        h = h + a
        m = keras.layers.LayerNormalization(name=f"{name}_ln{i}b")(h)
        m = keras.layers.Dense(4 * dim, "gelu", kernel_initializer=init)(m)
        h = h + keras.layers.Dense(dim, kernel_initializer=init)(m)
    h = keras.layers.LayerNormalization(name=f"{name}_ln")(h)
    logits = keras.layers.Dense(vocabulary, kernel_initializer=init)(h)
    return keras.Model(tokens, logits, name=name)


def cross_entropy():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def validation_ce(model, x, y):
    """The mean cross-entropy per validation token, in nats."""
    logits = predict(model, x).astype(np.float64)
    logits -= logits.max(-1, keepdims=True)
    log_z = np.log(np.exp(logits).sum(-1))
    picked = np.take_along_axis(logits, y[..., None], -1)[..., 0]
    return float(np.mean(log_z - picked))


def timed_fit(model, data, epochs):
    """Fits; returns the median seconds per epoch."""
    seconds = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.start)

    model.fit(
        data, epochs=epochs, verbose=0, shuffle=False, callbacks=[Clock()]
    )
    return statistics.median(seconds)


class Setup:
    """The data and the sizes of one benchmark run."""

    def __init__(self, quick, batch_size):
        config = QUICK if quick else {}
        self.window = config.get("window", WINDOW)
        self.teacher = config.get("teacher", TEACHER)
        self.student = config.get("student", STUDENT)
        self.top_k = config.get("top_k", TOP_K)
        self.batch_size = batch_size
        train, validation = corpus()
        if quick:
            train, validation = train[:6], validation[:2]
        self.tokenizer = word_piece_tokenizer(
            train, config.get("vocabulary", VOCABULARY)
        )
        self.vocabulary = int(self.tokenizer.vocabulary_size())
        self.x, self.y = windows(self.tokenizer, train, self.window)
        self.x_val, self.y_val = windows(
            self.tokenizer, validation, self.window
        )
        if quick:
            self.x, self.y = (
                self.x[: config["windows"]],
                self.y[: config["windows"]],
            )
            self.x_val, self.y_val = self.x_val[:16], self.y_val[:16]

    def model(self, sizes, seed, name):
        keras.utils.set_random_seed(seed)
        return decoder_lm(
            self.vocabulary, self.window, seed=seed, name=name, **sizes
        )

    def batches(self, seed):
        return pipeline(
            self.x, self.y, self.batch_size, shuffle=True, seed=seed
        )


def train_student(setup, seed, epochs, teacher=None, loss=None, cache=None):
    """A student from labels (no `loss`), or distilled with `loss` from the
    teacher online or from `cache`. Returns `(model, seconds per epoch)`."""
    student = setup.model(setup.student, seed + 1, "student")
    if loss is None:
        model, data = student, setup.batches(seed)
    else:
        model = Distiller(teacher, student, loss, student_loss_weight=ALPHA)
        data = setup.batches(seed)
        if cache is not None:
            data = cache.dataset(
                setup.x, setup.y, batch_size=setup.batch_size, seed=seed
            )
    model.compile(keras.optimizers.Adam(2e-3), cross_entropy())
    return student, timed_fit(model, data, epochs)


def export_figures(student, setup):
    """Size, ms per token and next-token agreement of the TFLite student."""
    from keras_distill import export

    figures = {}
    check = setup.x_val[:32]
    with tempfile.TemporaryDirectory() as folder:
        for mode in (None, "dynamic"):
            path = os.path.join(folder, f"{mode or 'float32'}.tflite")
            report = export.tflite(
                student, path, quantize=mode, check_data=check, latency_runs=20
            )
            figures[mode or "float32"] = {
                "bytes": report.bytes,
                "ms_per_window": report.latency_ms,
                "ms_per_token": report.latency_ms / setup.window,
                "next_token_agreement": report.argmax_agreement,
            }
    return figures


def run_seed(setup, seed, epochs, teacher_epochs, record, log):
    """Trains and scores every row of one seed."""

    def score(key, model, seconds):
        ce = validation_ce(model, setup.x_val, setup.y_val)
        record(key, ce, seconds)
        log(f"[lm seed {seed}] {key}: {ce:.4f} nats, {seconds:.1f} s/epoch")

    teacher = setup.model(setup.teacher, seed, "teacher")
    teacher.compile(keras.optimizers.Adam(1e-3), cross_entropy())
    score(
        "teacher",
        teacher,
        timed_fit(teacher, setup.batches(seed), teacher_epochs),
    )
    student, seconds = train_student(setup, seed, epochs)
    score("scratch", student, seconds)
    students = {}
    for key, make in ONLINE.items():
        students[key], seconds = train_student(
            setup, seed, epochs, teacher, make()
        )
        score(key, students[key], seconds)
    cache_bytes = {}
    for k in setup.top_k:
        cache = TeacherCache(
            teacher, setup.x, top_k=k, batch_size=256, verbose=0
        )
        cache_bytes[k] = cache.nbytes
        for form in FORMS:
            loss = losses.LogitsDistillation(1.0, top_k_form=form)
            model, seconds = train_student(
                setup, seed, epochs, teacher, loss, cache
            )
            score(f"top{k}_{form}", model, seconds)
    return students["forward"], cache_bytes


def run(
    seeds=(0, 1, 2),
    epochs=6,
    teacher_epochs=8,
    batch_size=32,
    quick=False,
    output=None,
    log=print,
):
    """Runs the language-model benchmark; see the module docstring.

    Args:
        seeds: One run per seed.
        epochs: Epochs of every student.
        teacher_epochs: Epochs of the teacher.
        batch_size: Windows per batch.
        quick: A tiny configuration (`QUICK`), for tests.
        output: A JSON file written after every seed, or None.
        log: A function that prints a progress line.

    Returns:
        The result dict.

    Raises:
        ImportError: Without `keras_hub` (the `hub` extra), for the
            tokenizer.
    """
    from keras_distill.app.bench import common

    setup = Setup(quick, batch_size)
    ce, seconds = {}, {}

    def record(key, value, time_per_epoch):
        ce.setdefault(key, []).append(value)
        seconds.setdefault(key, []).append(round(time_per_epoch, 2))

    tokens = int(setup.x.size)
    result = {
        "versions": versions(),
        "config": dict(
            window=setup.window,
            vocabulary=setup.vocabulary,
            tokenizer="WordPiece, trained on the training split",
            teacher=setup.teacher,
            student=setup.student,
            alpha=ALPHA,
            epochs=epochs,
            teacher_epochs=teacher_epochs,
            batch_size=batch_size,
            train_tokens=tokens,
            validation_tokens=int(setup.x_val.size),
        ),
    }
    for i, seed in enumerate(seeds):
        forward, cache_bytes = run_seed(
            setup, seed, epochs, teacher_epochs, record, log
        )
        if i == 0:
            result["tflite"] = export_figures(forward, setup)
            teacher = setup.model(setup.teacher, 0, "teacher")
            result["params"] = {
                "teacher": int(teacher.count_params()),
                "student": int(forward.count_params()),
            }
        result.update(
            seeds=list(seeds[: i + 1]),
            validation_ce=ce,
            perplexity={
                k: [float(np.exp(v)) for v in vs] for k, vs in ce.items()
            },
            seconds_per_epoch=seconds,
            mean_ce={k: statistics.mean(v) for k, v in ce.items()},
            cache_bytes_per_token={
                "full": 4 * setup.vocabulary,
                **{f"top{k}": b / tokens for k, b in cache_bytes.items()},
            },
        )
        result["ratios"] = ratios(result["mean_ce"])
        common.write_json(output, result)
    return result


def ratios(mean_ce):
    """The goals' ratios: KD over scratch, top-k over full-vocabulary KD."""
    out = {"forward/scratch": mean_ce["forward"] / mean_ce["scratch"]}
    for key in mean_ce:
        if key.startswith("top"):
            out[f"{key}/forward"] = mean_ce[key] / mean_ce["forward"]
    return out


def table(result):
    """A plain-text summary of a language-model benchmark result."""
    rows = []
    per_token = result["cache_bytes_per_token"]
    for key, values in result["validation_ce"].items():
        cache = "-"
        if key in ONLINE:
            cache = f"{per_token['full']:.0f} (full)"
        elif key.startswith("top"):
            cache = f"{per_token[key.split('_')[0]]:.0f}"
        rows.append(
            [
                key,
                f"{statistics.mean(values):.4f}",
                f"{float(np.exp(statistics.mean(values))):.1f}",
                f"{statistics.median(result['seconds_per_epoch'][key]):.1f}",
                cache,
            ]
        )
    header = [
        "model",
        "val CE (nats)",
        "perplexity",
        "s/epoch",
        "cache B/token",
    ]
    lines = [format_table(header, rows), ""]
    for mode, figures in result.get("tflite", {}).items():
        lines.append(
            f"TFLite {mode}: {figures['bytes']:,} bytes, "
            f"{figures['ms_per_token']:.3f} ms/token, next-token agreement "
            f"{100 * figures['next_token_agreement']:.2f}%"
        )
    lines.append(", ".join(f"{k} {v:.3f}" for k, v in result["ratios"].items()))
    return "\n".join(lines)
