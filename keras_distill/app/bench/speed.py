"""The speed benchmark behind `keras-distill bench speed`.

Every variant trains (or runs) on the same data with the same models, in
one process. After a warm-up epoch each, one timed epoch sets how many
epochs make a timed unit of at least `min_seconds` (2 s by default: a
short epoch sits on the timer plateaus of a virtual machine). Then the
variants take turns, unit by unit (A B C ... A B C ...), so that a slow
patch of a shared machine hits them all. Each ratio of `GOALS` is taken
within each round, from units timed side by side, and reported as the
median over rounds with its interquartile range, for wall time and for
process CPU time.

Variants (`VARIANTS`):
    student_alone: the student alone (`student.fit`);
    teacher_inference: the teacher's inference over the data;
    online: `keras_distill.Distiller`, the teacher running every step;
    cached: `keras_distill.Distiller` from a `TeacherCache` (the cache's
        build time apart);
    keras: `keras.distillation.Distiller` with `LogitsDistillation`;
    keras_io: the keras.io Distiller example's pattern, written here as
        the baseline;
    online_feature: ours with a feature loss (Keras' `FeatureDistillation`
        on a named layer) plus logits;
    keras_feature: Keras' distiller with the same two losses;
    bound: the physical bound: one `tf.function` with the teacher's
        forward pass, the student's forward and backward passes and the
        optimizer update, without metrics or callbacks.

The feature loss compares the layer named `logits` in both models, the
only layer the reference teacher and student share in shape; naming it
sends both distillers through their intermediate-feature code path.
"""

import math
import statistics
import time

import keras
import tensorflow as tf
from keras import ops

from keras_distill import losses
from keras_distill._validation import check_choice
from keras_distill.app import zoo
from keras_distill.app.bench.options import PRESETS
from keras_distill.app.datasets import load_arrays
from keras_distill.app.environment import versions
from keras_distill.app.report import format_table
from keras_distill.distiller import Distiller
from keras_distill.losses.logits import soft_kl
from keras_distill.teachers import TeacherCache

VARIANTS = {
    "student_alone": "student alone (student.fit)",
    "teacher_inference": "teacher inference",
    "online": "keras_distill, online",
    "cached": "keras_distill, cached",
    "keras": "keras.distillation.Distiller",
    "keras_io": "keras.io example pattern",
    "online_feature": "keras_distill, logits + feature loss",
    "keras_feature": "keras.distillation, logits + feature",
    "bound": "bound: one tf.function step",
}
# Ratios of median epoch times, and the most each may be.
GOALS = {
    "online/bound": 1.05,
    "online/keras": 0.95,
    "online/keras_io": 1.00,
    "online_feature/online": 1.15,
    "keras_feature/keras": None,
    "cached/student_alone": 1.10,
}
TEMPERATURE = 4.0
ALPHA = 0.1


def _keras_io_distiller():
    """The keras.io example's Distiller (Keras 3 version), as a baseline."""

    class KerasIODistiller(keras.Model):
        def __init__(self, student, teacher):
            super().__init__()
            self.teacher = teacher
            self.student = student

        def compile(
            self,
            optimizer,
            metrics,
            student_loss_fn,
            distillation_loss_fn,
            alpha=0.1,
            temperature=3,
        ):
            super().compile(optimizer=optimizer, metrics=metrics)
            self.student_loss_fn = student_loss_fn
            self.distillation_loss_fn = distillation_loss_fn
            self.alpha = alpha
            self.temperature = temperature

        def compute_loss(
            self, x=None, y=None, y_pred=None, sample_weight=None, **kwargs
        ):
            teacher_pred = self.teacher(x, training=False)
            student_loss = self.student_loss_fn(y, y_pred)
            distillation_loss = self.distillation_loss_fn(
                ops.softmax(teacher_pred / self.temperature, axis=1),
                ops.softmax(y_pred / self.temperature, axis=1),
            ) * (self.temperature**2)
            return (
                self.alpha * student_loss + (1 - self.alpha) * distillation_loss
            )

        def call(self, x):
            return self.student(x)

    return KerasIODistiller


def _bound_epoch(teacher, student, optimizer, dataset):
    """The `bound` variant: the least work an online distillation epoch
    can do."""
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(x, y):
        t = teacher(x, training=False)
        with tf.GradientTape() as tape:
            s = student(x, training=True)
            loss = ALPHA * ce(y, s) + (1 - ALPHA) * soft_kl(t, s, TEMPERATURE)
        variables = student.trainable_weights
        optimizer.apply_gradients(
            zip(tape.gradient(loss, variables), variables)
        )

    def epoch():
        for x, y in dataset:
            step(x, y)

    return epoch


def _data(quick, batch_size):
    """MNIST-5k's training set (512 examples when `quick`), shuffled."""
    arrays = load_arrays("mnist5k")
    x, y = arrays.x_train, arrays.y_train
    if quick:
        x, y = x[:512], y[:512]
    dataset = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(x), seed=0)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    return x, y, dataset


def _epochs(model, data):
    """`n` epochs of `model.fit`, in one call (one fit's set-up per unit)."""
    return lambda n=1: model.fit(data, epochs=n, verbose=0, shuffle=False)


def _repeated(function):
    """`n` calls of a function of no argument."""

    def run(n=1):
        for _ in range(n):
            function()

    return run


def _keras_losses(feature):
    """`keras.distillation` losses: KD, and a feature loss if asked."""
    chosen = [
        keras.distillation.LogitsDistillation(
            temperature=TEMPERATURE, loss=keras.losses.KLDivergence()
        )
    ]
    if feature:
        chosen.append(_keras_feature_loss())
    return chosen


def _keras_feature_loss():
    return keras.distillation.FeatureDistillation(
        loss="mse", teacher_layer_name="logits", student_layer_name="logits"
    )


def _ours(teacher, student, feature=False):
    chosen = [losses.LogitsDistillation(TEMPERATURE)]
    if feature:
        chosen.append(_keras_feature_loss())
    distiller = Distiller(teacher, student, chosen, student_loss_weight=ALPHA)
    distiller.compile("adam", _ce(), metrics=["accuracy"])
    return distiller


def _keras(teacher, student, feature=False):
    distiller = keras.distillation.Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=_keras_losses(feature),
        student_loss_weight=ALPHA,
    )
    distiller.compile("adam", loss=_ce(), metrics=["accuracy"])
    return distiller


def _keras_io(teacher, student):
    distiller = _keras_io_distiller()(student, teacher)
    distiller.compile(
        optimizer=keras.optimizers.Adam(),
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
        student_loss_fn=_ce(),
        distillation_loss_fn=keras.losses.KLDivergence(),
        alpha=ALPHA,
        temperature=TEMPERATURE,
    )
    return distiller


def _ce():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def epochs_of_variants(teacher, new_student, x, y, dataset, batch_size):
    """The epochs of each variant, as a function of their number `n`.

    Returns:
        `(epochs by variant, seconds the teacher cache took to build)`.
    """
    alone = new_student()
    alone.compile("adam", _ce(), metrics=["accuracy"])
    start = time.perf_counter()
    cache = TeacherCache(teacher, x, batch_size=256, verbose=0)
    cache_seconds = time.perf_counter() - start
    cached = cache.dataset(x, y, batch_size=batch_size, seed=0)
    epochs = {
        "student_alone": _epochs(alone, dataset),
        "teacher_inference": _repeated(
            lambda: teacher.predict(x, batch_size=batch_size, verbose=0)
        ),
        "online": _epochs(_ours(teacher, new_student()), dataset),
        "cached": _epochs(_ours(teacher, new_student()), cached),
        "keras": _epochs(_keras(teacher, new_student()), dataset),
        "keras_io": _epochs(_keras_io(teacher, new_student()), dataset),
        "online_feature": _epochs(
            _ours(teacher, new_student(), feature=True), dataset
        ),
        "keras_feature": _epochs(
            _keras(teacher, new_student(), feature=True), dataset
        ),
        "bound": _repeated(
            _bound_epoch(
                teacher, new_student(), keras.optimizers.Adam(), dataset
            )
        ),
    }
    return epochs, cache_seconds


def units(epochs, min_seconds):
    """How many epochs make a timed unit of at least `min_seconds`, per
    variant: from one timed epoch after a warm-up epoch (tracing, first
    allocations)."""
    counts = {}
    for k, epoch in epochs.items():
        epoch(1)  # warm-up
        start = time.perf_counter()
        epoch(1)
        seconds = time.perf_counter() - start
        counts[k] = max(1, math.ceil(min_seconds / max(seconds, 1e-6)))
    return counts


def time_rounds(epochs, rounds, log, prefix, min_seconds=2.0):
    """Times `rounds` turns of every variant's unit, after a warm-up.

    Returns:
        `(wall seconds by variant, process CPU seconds by variant, epochs
        per unit by variant)`; the seconds are per epoch (a unit's time
        divided by its epochs), one value per round.
    """
    counts = units(epochs, min_seconds)
    times = {k: [] for k in epochs}
    cpu = {k: [] for k in epochs}
    for r in range(rounds):
        for k, epoch in epochs.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            epoch(counts[k])
            times[k].append((time.perf_counter() - start) / counts[k])
            cpu[k].append((time.process_time() - start_cpu) / counts[k])
        log(
            f"[{prefix}] round {r + 1}/{rounds}: "
            + " ".join(f"{k}={times[k][-1]:.3f}s" for k in epochs)
        )
    return times, cpu, counts


def ratios(values):
    """The ratios of `GOALS` between per-variant values."""
    out = {}
    for pair in GOALS:
        a, b = pair.split("/")
        out[pair] = values[a] / values[b]
    return out


def _quartiles(values):
    """`(first quartile, median, third quartile)` of a list."""
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, median, q3


def round_ratios(times):
    """Each ratio of `GOALS` within each round, summarised over rounds.

    Args:
        times: Seconds by variant, one value per round.

    Returns:
        `{ratio: {"median", "q1", "q3", "iqr_share", "rounds"}}`, where
        `iqr_share` is `(q3 - q1) / median`: the ratio's spread.
    """
    out = {}
    for pair in GOALS:
        a, b = pair.split("/")
        per_round = [x / y for x, y in zip(times[a], times[b])]
        q1, median, q3 = _quartiles(per_round)
        out[pair] = {
            "median": median,
            "q1": q1,
            "q3": q3,
            "iqr_share": (q3 - q1) / median,
            "rounds": per_round,
        }
    return out


def run(
    preset="mlp",
    quick=False,
    rounds=7,
    batch_size=64,
    min_seconds=2.0,
    log=print,
):
    """Runs the speed benchmark.

    Args:
        preset: A name from `PRESETS`.
        quick: A short run (512 examples, 3 rounds, one epoch a unit) for
            smoke tests.
        rounds: Timed units per variant (after the warm-up).
        batch_size: Batch size.
        min_seconds: The least time of a timed unit (epochs are repeated
            until a unit takes this long).
        log: A function that prints a progress line.

    Returns:
        The result dict: versions, configuration, median epoch seconds per
        variant, the cache's build time and the ratios the goals use.

    Raises:
        ValueError: If `preset` is unknown.
    """
    check_choice("preset", preset, sorted(PRESETS))
    rounds = 3 if quick else rounds
    min_seconds = 0.0 if quick else min_seconds
    x, y, dataset = _data(quick, batch_size)
    shape, classes = x.shape[1:], 10
    keras.utils.set_random_seed(0)
    teacher = zoo.build(PRESETS[preset]["teacher"], shape, classes, seed=0)

    def new_student():
        return zoo.build(PRESETS[preset]["student"], shape, classes, seed=1)

    epochs, cache_seconds = epochs_of_variants(
        teacher, new_student, x, y, dataset, batch_size
    )
    times, cpu, counts = time_rounds(
        epochs, rounds, log, f"speed {preset}", min_seconds
    )
    median = {k: statistics.median(v) for k, v in times.items()}
    median_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    return {
        "versions": versions(),
        "preset": preset,
        "config": dict(
            PRESETS[preset],
            examples=int(len(x)),
            batch_size=batch_size,
            rounds=rounds,
            quick=quick,
            min_seconds=min_seconds,
            epochs_per_unit=counts,
            temperature=TEMPERATURE,
            alpha=ALPHA,
            teacher_params=int(teacher.count_params()),
            student_params=int(new_student().count_params()),
        ),
        "median_epoch_seconds": median,
        "min_epoch_seconds": {k: min(v) for k, v in times.items()},
        "epoch_seconds": times,
        # Process CPU time (all threads): steadier than wall time on a
        # shared machine, since waiting for the CPU does not count.
        "median_epoch_cpu_seconds": median_cpu,
        "epoch_cpu_seconds": cpu,
        "cache_build_seconds": cache_seconds,
        "ratios": ratios(median),
        "ratios_cpu": ratios(median_cpu),
        # Within-round ratios: the medians and spreads the goals read.
        "round_ratios": round_ratios(times),
        "round_ratios_cpu": round_ratios(cpu),
        "goals": {k: v for k, v in GOALS.items() if v is not None},
    }


def table(result):
    """A plain-text summary of a speed benchmark result."""
    rows = [
        [
            label,
            f"{result['median_epoch_seconds'][k]:.3f}",
            f"{result['min_epoch_seconds'][k]:.3f}",
            f"{result['median_epoch_cpu_seconds'][k]:.3f}",
        ]
        for k, label in VARIANTS.items()
    ]
    text = format_table(
        ["variant", "median s/epoch", "min s/epoch", "median CPU s/epoch"], rows
    )
    goals = result["goals"]
    lines = [text, "", f"cache build: {result['cache_build_seconds']:.2f} s"]
    lines.append(
        f"{'ratio (median of rounds)':26s} wall [IQR]              "
        "CPU [IQR]               goal"
    )
    for name, wall in result["round_ratios"].items():
        goal = goals.get(name)
        cpu_value = result["round_ratios_cpu"][name]
        verdict = "" if goal is None else f"<= {goal:.2f}"
        lines.append(
            f"{name:26s} {_spread(wall):23s} {_spread(cpu_value):23s} {verdict}"
        )
    return "\n".join(lines)


def _spread(summary):
    return f"{summary['median']:.3f} [{summary['q1']:.3f}-{summary['q3']:.3f}]"
