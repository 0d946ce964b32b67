"""The language-model benchmark behind `keras-distill bench lm`.

Offline, on the source of the Python standard library (`lm_corpus`,
about 10 MB of `.py` files, split by module name; `--corpus docs` and
`--quick` use the documentation Python ships). A WordPiece vocabulary is
trained on the training split, the text cut into windows of `WINDOW`
tokens, and every `TRAIN_STRIDE`-th training window (every
`VALIDATION_STRIDE`-th validation window) kept, so that a run fits 45
minutes on two cores. A decoder-only Transformer teacher (`decoder_lm`)
is trained once, on seed 0; then per seed, a much smaller student:

- `scratch` (the student from the next tokens alone);
- `forward` (KD: `LogitsDistillation` at T = 1) and `jsd` (GKD's
  `GeneralizedJSD(0.5)`), the teacher online: off-policy;
- `top{k}_{form}`: forward KD from a `TeacherCache(top_k=k)`, for k in
  `TOP_K` and both top-k forms (`keras_distill.losses.divergences`),
  trained in turns, an epoch of each, so their times compare;
- `on_policy_{λ}`: the `jsd` student with its last epoch on policy
  (`keras_distill.on_policy.OnPolicy`): a fraction λ of each batch
  continued by the student itself (`ON_POLICY`), as GKD fine-tunes a
  trained student; same updates as `jsd`;
- `forward_int8` and `forward_qat_int8`: the `forward` student's
  dynamic-range int8 file, and the file of the same student whose last
  epoch was distilled quantization-aware instead (`lm_quantized`).

The `forward` and `jsd` students train their last epoch in a second
`fit` (where the on-policy and quantization-aware rows branch off), which
reads the batches in the first epoch's order again.

Every student mixes the cross-entropy on the next tokens and its
distillation term at `ALPHA`, reads the same batches,
and is scored by its validation cross-entropy per token (nats) and by
what it generates: the teacher's negative log-likelihood per token of
the student's own sampled continuations of `SAMPLED_PROMPTS` validation
prompts (`sampled_nll`). The `forward` student of the first seed is
exported to TFLite (float32 and dynamic-range int8): file size,
milliseconds per token (one thread) and the share of validation tokens
whose next-token argmax agrees with Keras.
"""

import os
import statistics
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from keras_distill import losses
from keras_distill import on_policy
from keras_distill._utils import predict
from keras_distill.app.bench import common
from keras_distill.app.bench import lm_quantized
from keras_distill.app.bench.lm_corpus import corpus
from keras_distill.app.bench.lm_corpus import windows
from keras_distill.app.bench.lm_corpus import word_piece_tokenizer
from keras_distill.app.bench.lm_models import decoder_lm
from keras_distill.app.environment import versions
from keras_distill.app.report import format_table
from keras_distill.distiller import Distiller
from keras_distill.pipelines import pipeline
from keras_distill.teachers import TeacherCache

WINDOW = 64
VOCABULARY = 2048
TEACHER = dict(dim=128, layers=2, heads=4)
STUDENT = dict(dim=32, layers=1, heads=2)
ALPHA = 0.5
TOP_K = (32,)
FORMS = ("rest", "renormalized")
TRAIN_STRIDE, VALIDATION_STRIDE = 6, 8
# Texts the tokenizer is trained on: every third training module.
TOKENIZER_STRIDE = 3
ONLINE = {
    "forward": lambda: losses.LogitsDistillation(1.0),
    # A mean per weighted token: per generated token on policy.
    "jsd": lambda: losses.GeneralizedJSD(
        0.5, reduction="mean_with_sample_weight"
    ),
}
# On-policy rows: the `jsd` student whose last epoch is on policy, JSD(0.5)
# on its own continuations of a fraction λ of each batch (as GKD starts
# from a trained student); the `jsd` row is λ = 0 at the same updates.
ON_POLICY = dict(
    fractions=(0.5, 1.0), prompt_length=(8, 32), new_tokens=24
)
# What the students generate: continuations of validation prompts,
# scored by the teacher.
SAMPLED_PROMPTS, SAMPLED_PROMPT_LENGTH, SAMPLED_TOKENS = 256, 16, 32
# A tiny configuration for tests: a few windows, small models.
QUICK = dict(
    corpus="docs",
    window=16,
    vocabulary=300,
    teacher=dict(dim=16, layers=1, heads=2),
    student=dict(dim=8, layers=1, heads=1),
    windows=48,
    top_k=(4,),
    on_policy=dict(fractions=(0.5,), prompt_length=(2, 6), new_tokens=4),
    sampled=(8, 4, 6),
)


def cross_entropy():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def validation_ce(model, x, y):
    """The mean cross-entropy per validation token, in nats."""
    return common.next_token_ce(predict(model, x), y)


def timed_fit(model, data, epochs, initial_epoch=0):
    """Fits from `initial_epoch` to `epochs`; returns the median seconds
    per epoch (`epoch_seconds` returns them all)."""
    return statistics.median(epoch_seconds(model, data, epochs, initial_epoch))


def epoch_seconds(model, data, epochs, initial_epoch=0):
    """Fits from `initial_epoch` to `epochs`; returns each epoch's seconds."""
    seconds = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.start)

    model.fit(
        data,
        epochs=epochs,
        initial_epoch=initial_epoch,
        verbose=0,
        shuffle=False,
        callbacks=[Clock()],
    )
    return seconds


class Setup:
    """The data and the sizes of one benchmark run."""

    def __init__(self, quick, batch_size, corpus_name="stdlib"):
        config = QUICK if quick else {}
        self.corpus = config.get("corpus", corpus_name)
        self.window = config.get("window", WINDOW)
        self.teacher = config.get("teacher", TEACHER)
        self.student = config.get("student", STUDENT)
        self.top_k = config.get("top_k", TOP_K)
        self.on_policy = config.get("on_policy", ON_POLICY)
        self.sampled = config.get(
            "sampled", (SAMPLED_PROMPTS, SAMPLED_PROMPT_LENGTH, SAMPLED_TOKENS)
        )
        self.batch_size = batch_size
        train, validation = corpus(self.corpus)
        if quick:
            train, validation = train[:6], validation[:2]
        self.tokenizer = word_piece_tokenizer(
            train[::TOKENIZER_STRIDE] if self.corpus == "stdlib" else train,
            config.get("vocabulary", VOCABULARY),
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
        elif self.corpus == "stdlib":
            self.x, self.y = self.x[::TRAIN_STRIDE], self.y[::TRAIN_STRIDE]
            self.x_val = self.x_val[::VALIDATION_STRIDE]
            self.y_val = self.y_val[::VALIDATION_STRIDE]

    def model(self, sizes, seed, name):
        keras.utils.set_random_seed(seed)
        return decoder_lm(
            self.vocabulary, self.window, seed=seed, name=name, **sizes
        )

    def batches(self, seed):
        return pipeline(
            self.x, self.y, self.batch_size, shuffle=True, seed=seed
        )


def sampled_nll(student, teacher, setup, seed):
    """What the student generates, as the teacher judges it.

    The student continues the first tokens of `SAMPLED_PROMPTS` validation
    windows with `SAMPLED_TOKENS` sampled tokens (temperature 1, seeded);
    the result is the teacher's mean negative log-likelihood per
    generated token (nats): lower means continuations the teacher finds
    likelier.
    """
    count, prompt, new = setup.sampled
    x = setup.x_val[:count]
    tokens = on_policy.sample(student, x, prompt, new, 1.0, seed=[seed, 1])
    logits = tf.cast(predict(teacher, tokens), "float32")
    log_p = tf.nn.log_softmax(logits, axis=-1).numpy()
    positions = np.arange(prompt, prompt + new)
    picked = np.take_along_axis(
        log_p[:, positions - 1], tokens[:, positions, None], -1
    )
    return float(-picked.mean())


def train_student(
    setup, seed, epochs, teacher=None, loss=None, cache=None, last=False,
    generation=None, fork=None,
):
    """A student from labels (no `loss`), or distilled with `loss` from the
    teacher online or from `cache`. With `last`, its last epoch is a
    second `fit` (given `generation`, an `OnPolicy`, on policy): the
    off-policy row and the on-policy rows then share their first epochs;
    `fork`, if given, is called with the student and its training model
    before that epoch.

    Returns:
        `(model, seconds per epoch)`: the median over epochs, or the last
        epoch's with `last`.
    """
    student, model = compiled_student(setup, seed, teacher, loss)
    data = setup.batches(seed)
    if cache is not None:
        data = cached_batches(setup, cache, seed)
    if not last:
        return student, timed_fit(model, data, epochs)
    epoch_seconds(model, setup.batches(seed), epochs - 1)
    if fork is not None:
        fork(student, model)
    if generation is not None:
        model.generation = generation
        model.train_function = None  # traced again, with generation
    (seconds,) = epoch_seconds(model, setup.batches(seed), epochs, epochs - 1)
    return student, seconds


def compiled_student(setup, seed, teacher=None, loss=None):
    """`(student, the model that trains it)`: the student itself, or a
    `Distiller` with `loss`; compiled."""
    student = setup.model(setup.student, seed + 1, "student")
    model = student
    if loss is not None:
        model = Distiller(teacher, student, loss, student_loss_weight=ALPHA)
    model.compile(keras.optimizers.Adam(2e-3), cross_entropy())
    return student, model


def cached_batches(setup, cache, seed):
    """The training batches with the teacher's outputs from `cache`, in
    the order of `setup.batches(seed)`."""
    return cache.dataset(
        setup.x, setup.y, batch_size=setup.batch_size, seed=seed
    )


def train_in_turns(setup, seed, epochs, teacher, rows, cache):
    """Students distilled from `cache`, one per loss of `rows`, one epoch
    of each in turn, so that their seconds per epoch compare on a shared
    machine; each reads its own batches, in `train_student`'s order.

    Returns:
        `{key: (student, median seconds per epoch)}`.
    """
    turns = {}
    for key, loss in rows.items():
        student, model = compiled_student(setup, seed, teacher, loss)
        turns[key] = (student, model, cached_batches(setup, cache, seed), [])
    for epoch in range(epochs):
        for _, model, data, seconds in turns.values():
            seconds += epoch_seconds(model, data, epoch + 1, epoch)
    return {
        key: (student, statistics.median(seconds))
        for key, (student, _, _, seconds) in turns.items()
    }


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


def train_teacher(setup, epochs):
    """The teacher every seed's students learn from (seed 0)."""
    teacher = setup.model(setup.teacher, 0, "teacher")
    teacher.compile(keras.optimizers.Adam(1e-3), cross_entropy())
    seconds = timed_fit(teacher, setup.batches(0), epochs)
    return teacher, seconds


def run_seed(setup, seed, epochs, teacher, record, log, quantized):
    """Trains and scores every student row of one seed."""

    def score(key, model, seconds):
        ce = validation_ce(model, setup.x_val, setup.y_val)
        nll = sampled_nll(model, teacher, setup, seed)
        record(key, ce, seconds, nll)
        log(
            f"[lm seed {seed}] {key}: {ce:.4f} nats, sampled NLL "
            f"{nll:.4f}, {seconds:.1f} s/epoch"
        )

    student, seconds = train_student(setup, seed, epochs)
    score("scratch", student, seconds)
    students, figures = {}, {}

    def fork(student, model):
        def last_epoch(twin):  # the twin's last epoch, same optimizer
            branch = Distiller(
                teacher, twin, ONLINE["forward"](), student_loss_weight=ALPHA
            )
            branch.compile(model.optimizer, cross_entropy())
            (seconds,) = epoch_seconds(
                branch, setup.batches(seed), epochs, epochs - 1
            )
            return seconds

        figures.update(lm_quantized.branch(model, last_epoch, setup))

    for key, make in ONLINE.items():
        students[key], seconds = train_student(
            setup, seed, epochs, teacher, make(), last=True,
            fork=fork if key == "forward" else None,
        )
        score(key, students[key], seconds)
        if key == "forward":
            figures.update(lm_quantized.post_training(setup, students[key]))
            figures = lm_quantized.finish(figures, seconds)
            for row in ("forward_int8", "forward_qat_int8"):
                record(row, figures[f"{row}_ce"], figures[f"{row}_seconds"])
            quantized.append(figures)
            log(lm_quantized.line(seed, figures))
    config = setup.on_policy
    for fraction in config["fractions"]:
        generation = on_policy.OnPolicy(
            fraction,
            config["prompt_length"],
            config["new_tokens"],
            temperature=1.0,
            seed=seed,
        )
        model, seconds = train_student(
            setup, seed, epochs, teacher, ONLINE["jsd"](), None, True,
            generation,
        )
        score(f"on_policy_{fraction:g}", model, seconds)
    cache_bytes = {}
    for k in setup.top_k:
        cache = TeacherCache(
            teacher, setup.x, top_k=k, batch_size=256, verbose=0
        )
        cache_bytes[k] = cache.nbytes
        rows = {
            f"top{k}_{form}": losses.LogitsDistillation(1.0, top_k_form=form)
            for form in FORMS
        }
        trained = train_in_turns(setup, seed, epochs, teacher, rows, cache)
        for key, (model, seconds) in trained.items():
            score(key, model, seconds)
    return students["forward"], cache_bytes


def run(
    seeds=(0, 1, 2),
    epochs=3,
    teacher_epochs=8,
    batch_size=32,
    quick=False,
    output=None,
    log=print,
    corpus_name="stdlib",
):
    """Runs the language-model benchmark; see the module docstring.

    Args:
        seeds: One run of every student per seed.
        epochs: Epochs of every student.
        teacher_epochs: Epochs of the teacher (trained once).
        batch_size: Windows per batch.
        quick: A tiny configuration (`QUICK`, the docs corpus), for tests.
        output: A JSON file written after every seed, or None.
        log: A function that prints a progress line.
        corpus_name: `"stdlib"` or `"docs"` (`lm_corpus.CORPORA`).

    Returns:
        The result dict.

    Raises:
        ImportError: Without `keras_hub` (the `hub` extra), for the
            tokenizer.
    """

    setup = Setup(quick, batch_size, corpus_name)
    ce, seconds, nll, quantized = {}, {}, {}, []

    def record(key, value, time_per_epoch, sampled=None):
        ce.setdefault(key, []).append(value)
        seconds.setdefault(key, []).append(round(time_per_epoch, 2))
        if sampled is not None:
            nll.setdefault(key, []).append(sampled)

    tokens = int(setup.x.size)
    count, prompt, new = setup.sampled
    result = {
        "versions": versions(),
        "config": dict(
            corpus=setup.corpus,
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
            on_policy=dict(setup.on_policy),
            sampled=dict(prompts=count, prompt_length=prompt, tokens=new),
        ),
    }
    start = time.perf_counter()
    teacher, teacher_seconds = train_teacher(setup, teacher_epochs)
    teacher_ce = validation_ce(teacher, setup.x_val, setup.y_val)
    log(f"[lm] teacher: {teacher_ce:.4f} nats, {teacher_seconds:.1f} s/epoch")
    for i, seed in enumerate(seeds):
        record("teacher", teacher_ce, teacher_seconds)
        forward, cache_bytes = run_seed(
            setup, seed, epochs, teacher, record, log, quantized
        )
        if i == 0:
            result["tflite"] = export_figures(forward, setup)
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
            sampled_nll=nll,
            seconds_per_epoch=seconds,
            mean_ce={k: statistics.mean(v) for k, v in ce.items()},
            mean_sampled_nll={k: statistics.mean(v) for k, v in nll.items()},
            cache_bytes_per_token={
                "full": 4 * setup.vocabulary,
                **{f"top{k}": b / tokens for k, b in cache_bytes.items()},
            },
            minutes=round((time.perf_counter() - start) / 60, 1),
            quantization_aware=lm_quantized.summary(quantized),
        )
        result["ratios"] = ratios(
            result["mean_ce"], result["mean_sampled_nll"], seconds
        )
        common.write_json(output, result)
    return result


def ratios(mean_ce, mean_nll=None, seconds=None):
    """The goals' ratios: the teacher and KD over scratch, top-k over
    full-vocabulary KD, each on-policy row's sampled NLL and
    cross-entropy over the off-policy `forward` and `jsd` rows', and the
    top-k rest form's seconds per epoch over the renormalized form's
    (medians over seeds; the two train in turns)."""
    out = {
        "teacher/scratch": mean_ce["teacher"] / mean_ce["scratch"],
        "forward/scratch": mean_ce["forward"] / mean_ce["scratch"],
    }
    for key in mean_ce:
        if key.startswith("top"):
            out[f"{key}/forward"] = mean_ce[key] / mean_ce["forward"]
    for key in mean_nll or {}:
        if not key.startswith("on_policy"):
            continue
        for base in ONLINE:
            out[f"{key}/{base} sampled NLL"] = mean_nll[key] / mean_nll[base]
            out[f"{key}/{base} CE"] = mean_ce[key] / mean_ce[base]
    for key in seconds or {}:
        if key.startswith("top") and key.endswith("_rest"):
            other = key.replace("_rest", "_renormalized")
            below = statistics.median(seconds[other])
            if below > 0:  # (rounded to 0.01 s: a tiny quick run's 0)
                out[f"{key}/{other} s/epoch"] = (
                    statistics.median(seconds[key]) / below
                )
    return out


def table(result):
    """A plain-text summary of a language-model benchmark result."""
    rows = []
    per_token = result["cache_bytes_per_token"]
    for key, values in result["validation_ce"].items():
        cache = "-"
        if key in ONLINE or key.startswith("on_policy"):
            cache = f"{per_token['full']:.0f} (full)"
        elif key.startswith("top"):
            cache = f"{per_token[key.split('_')[0]]:.0f}"
        sampled = result.get("sampled_nll", {}).get(key)
        rows.append(
            [
                key,
                f"{statistics.mean(values):.4f}",
                f"{statistics.mean(sampled):.4f}" if sampled else "-",
                f"{float(np.exp(statistics.mean(values))):.1f}",
                f"{statistics.median(result['seconds_per_epoch'][key]):.1f}",
                cache,
            ]
        )
    header = [
        "model",
        "val CE (nats)",
        "sampled NLL",
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
