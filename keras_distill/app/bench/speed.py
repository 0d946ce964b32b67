"""The speed benchmark behind `keras-distill bench speed`.

Every variant trains (or runs) on the same data with the same models, in
one process. After two untimed epochs each (a warm-up, and one that
sizes the turns), the variants take turns, a turn being one epoch by
default (`min_seconds=0`; with `min_seconds`, as many epochs as make at
least that long, sized from that second epoch), for
`rounds` rounds, every other round in reverse order (A B C, C B A, ...).
A shared machine's speed moves from one second to the next: one epoch a
turn spreads each variant over as many of those seconds as there are
rounds, where a turn of several epochs sits in one. Every epoch is timed
on its own (wall clock and process CPU time). A variant's figure is the
first quartile of its epoch times: on a shared machine interference only
adds time, to some epochs more than others, and the first quartile of
many epochs stays near the undisturbed cost where a mean or even a
median moves with the share of disturbed epochs. Each ratio of `GOALS`
is the ratio of two such figures (the goals read the CPU-time ratios),
reported with the spread of the same ratio taken round by round (the
ratio of each round's median epoch times: its median and interquartile
range over rounds). TensorFlow runs on one thread by default
(`threads=1`), so the figures are the cost of each variant's work: with
TensorFlow's own pools (a thread a core) on a 2-core machine, one
variant could sit 10% off the others for a whole process.

Before any of that, `first_step_seconds` times a fresh model's first
`fit` of one batch (tracing included), as a notebook's first cell
would see it: the student alone, our distiller and Keras' distiller.

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
        optimizer update, without metrics or callbacks;
    quantization_aware: `online` with the student's int8
        quantization-aware twin (`keras_distill.quantization`).

The feature loss compares the layer named `logits` in both models, the
only layer the reference teacher and student share in shape; naming it
sends both distillers through their intermediate-feature code path.
"""

import json
import math
import statistics
import subprocess
import sys
import time

import keras
import tensorflow as tf

from keras_distill._validation import check_choice
from keras_distill._validation import check_int
from keras_distill.app import zoo
from keras_distill.app.bench import speed_models as models
from keras_distill.app.bench.options import DEFAULT_MIN_SECONDS
from keras_distill.app.bench.options import DEFAULT_PROCESSES
from keras_distill.app.bench.options import DEFAULT_ROUNDS
from keras_distill.app.bench.options import DEFAULT_THREADS
from keras_distill.app.bench.options import PRESETS
from keras_distill.app.bench.speed_stats import GOALS
from keras_distill.app.bench.speed_stats import combine
from keras_distill.app.bench.speed_stats import pooled_medians
from keras_distill.app.bench.speed_stats import pooled_quartiles
from keras_distill.app.bench.speed_stats import ratios
from keras_distill.app.bench.speed_stats import round_ratios
from keras_distill.app.datasets import load_arrays
from keras_distill.app.environment import versions
from keras_distill.app.report import format_table
from keras_distill.quantization import quantization_aware
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
    "quantization_aware": "keras_distill, int8 quantization-aware student",
}
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


class _EpochTimes(keras.callbacks.Callback):
    """Records `(wall seconds, process CPU seconds)` of every epoch."""

    def __init__(self):
        super().__init__()
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = (time.perf_counter(), time.process_time())

    def on_epoch_end(self, epoch, logs=None):
        wall, cpu = self._start
        self.times.append(
            (time.perf_counter() - wall, time.process_time() - cpu)
        )


def _epochs(model, data):
    """`n` epochs of `model.fit` in one call (one fit's set-up per unit);
    returns each epoch's `(wall, CPU)` seconds."""

    def run(n=1):
        timer = _EpochTimes()
        model.fit(data, epochs=n, verbose=0, shuffle=False, callbacks=[timer])
        return timer.times

    return run


def _repeated(function):
    """`n` calls of a function of no argument; returns each call's
    `(wall, CPU)` seconds."""

    def run(n=1):
        times = []
        for _ in range(n):
            wall, cpu = time.perf_counter(), time.process_time()
            function()
            times.append(
                (time.perf_counter() - wall, time.process_time() - cpu)
            )
        return times

    return run


def epochs_of_variants(teacher, new_student, x, y, dataset, batch_size):
    """The epochs of each variant, as a function of their number `n`.

    Returns:
        `(epochs by variant, seconds the teacher cache took to build)`.
    """
    alone = models.compiled_student(new_student())
    start = time.perf_counter()
    cache = TeacherCache(teacher, x, batch_size=256, verbose=0)
    cache_seconds = time.perf_counter() - start
    cached = cache.dataset(x, y, batch_size=batch_size, seed=0)
    epochs = {
        "student_alone": _epochs(alone, dataset),
        "teacher_inference": _repeated(
            lambda: teacher.predict(x, batch_size=batch_size, verbose=0)
        ),
        "online": _epochs(models.ours(teacher, new_student()), dataset),
        "cached": _epochs(models.ours(teacher, new_student()), cached),
        "keras": _epochs(
            models.keras_distiller(teacher, new_student()), dataset
        ),
        "keras_io": _epochs(models.keras_io(teacher, new_student()), dataset),
        "online_feature": _epochs(
            models.ours(teacher, new_student(), feature=True), dataset
        ),
        "keras_feature": _epochs(
            models.keras_distiller(teacher, new_student(), feature=True),
            dataset,
        ),
        "bound": _repeated(
            models.bound_epoch(
                teacher, new_student(), keras.optimizers.Adam(), dataset
            )
        ),
        "quantization_aware": _epochs(
            models.ours(teacher, quantization_aware(new_student())), dataset
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
        ((seconds, _),) = epoch(1)
        counts[k] = max(1, math.ceil(min_seconds / max(seconds, 1e-6)))
    return counts


def time_rounds(epochs, rounds, log, prefix, min_seconds=0.0):
    """Times `rounds` turns of every variant, after a warm-up, every
    other round in reverse order.

    Returns:
        `(wall seconds, process CPU seconds, epochs per unit)`, each by
        variant; the seconds are lists of rounds, each the list of that
        round's epoch times.
    """
    counts = units(epochs, min_seconds)
    times = {k: [] for k in epochs}
    cpu = {k: [] for k in epochs}
    names = list(epochs)
    for r in range(rounds):
        # Every other round backwards (A B C, C B A, ...): a drift of the
        # machine's speed within a round hits each pair of variants alike.
        for k in names if r % 2 == 0 else names[::-1]:
            measured = epochs[k](counts[k])
            times[k].append([wall for wall, _ in measured])
            cpu[k].append([seconds for _, seconds in measured])
        log(
            f"[{prefix}] round {r + 1}/{rounds}: "
            + " ".join(
                f"{k}={statistics.median(times[k][-1]):.3f}s" for k in epochs
            )
        )
    return times, cpu, counts


def first_steps(teacher, new_student, dataset, repeats=3):
    """Seconds to the first finished step of a fresh model's `fit` (one
    batch, tracing included): `student_alone`, `online` (ours) and
    `keras` (`keras.distillation.Distiller`), each built and compiled
    anew (construction and `compile` count too), taking turns `repeats`
    times after one untimed student (TensorFlow's own first-use set-up).

    Returns:
        `{variant: [seconds, ...]}`, one value per repeat.
    """
    batch = dataset.take(1)
    makers = {
        "student_alone": lambda: models.compiled_student(new_student()),
        "online": lambda: models.ours(teacher, new_student()),
        "keras": lambda: models.keras_distiller(teacher, new_student()),
    }
    warm = models.compiled_student(new_student())  # TF's own first-use set-up
    warm.fit(batch, verbose=0, shuffle=False)
    seconds = {k: [] for k in makers}
    for _ in range(repeats):
        for k, make in makers.items():
            start = time.perf_counter()
            make().fit(batch, epochs=1, verbose=0, shuffle=False)
            seconds[k].append(time.perf_counter() - start)
    return seconds


def run(
    preset="mlp",
    quick=False,
    rounds=DEFAULT_ROUNDS,
    batch_size=64,
    min_seconds=DEFAULT_MIN_SECONDS,
    log=print,
    processes=DEFAULT_PROCESSES,
    threads=DEFAULT_THREADS,
):
    """Runs the speed benchmark in `processes` fresh processes, one after
    the other, and combines them (`combine`).

    A variant can run a few per cent faster or slower for a whole process
    (where its buffers landed, which threads ran it): an offset that no
    number of rounds inside one process averages away. Each process
    therefore measures every variant, and each figure and ratio is the
    median over processes.

    Args:
        preset: A name from `PRESETS`.
        quick: A short run (512 examples, 3 rounds, one epoch a turn)
            for smoke tests.
        rounds: Rounds per process (after the warm-up), each one turn of
            every variant, every other one in reverse order.
        batch_size: Batch size.
        min_seconds: The least time of a variant's turn (epochs are
            repeated until a turn takes this long; 0: one epoch a turn).
        log: A function that prints a progress line.
        processes: Fresh processes; 1 runs in this one.
        threads: TensorFlow's intra- and inter-op threads in each process
            (0: TensorFlow's own choice, one per core).

    Returns:
        The result dict: versions, configuration, median and first-quartile
        epoch seconds per variant, the cache's build time and the ratios
        the goals use, and each process' ratios.

    Raises:
        ValueError: If `preset` is unknown or `processes` is not positive.
    """
    check_choice("preset", preset, sorted(PRESETS))
    check_int("processes", processes, low=1)
    check_int("threads", threads, low=0)
    arguments = dict(
        preset=preset,
        quick=quick,
        rounds=rounds,
        batch_size=batch_size,
        min_seconds=min_seconds,
        threads=threads,
    )
    if processes == 1:
        return combine([run_one(**arguments, log=log)])
    results = []
    for index in range(processes):
        log(f"[speed {preset}] process {index + 1}/{processes}")
        results.append(_in_fresh_process(arguments))
    return combine(results)


def _in_fresh_process(arguments):
    """`run_one(**arguments)` in a fresh Python process; its progress
    lines go to this process' standard error."""
    process = subprocess.run(
        [sys.executable, "-m", __name__, json.dumps(arguments)],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    lines = process.stdout.strip().splitlines()
    if process.returncode != 0 or not lines:
        raise RuntimeError(
            f"A speed benchmark process failed (exit {process.returncode}); "
            "its error is printed above."
        )
    return json.loads(lines[-1])


def run_one(
    preset, quick, rounds, batch_size, min_seconds, threads=0, log=print
):
    """One process' run: the arguments and result of `run` (without
    `process_ratios`)."""
    _set_threads(threads)
    rounds = 3 if quick else rounds
    min_seconds = 0.0 if quick else min_seconds
    x, y, dataset = _data(quick, batch_size)
    shape, classes = x.shape[1:], 10
    keras.utils.set_random_seed(0)
    teacher = zoo.build(PRESETS[preset]["teacher"], shape, classes, seed=0)

    def new_student():
        return zoo.build(PRESETS[preset]["student"], shape, classes, seed=1)

    first = first_steps(teacher, new_student, dataset, 1 if quick else 3)
    epochs, cache_seconds = epochs_of_variants(
        teacher, new_student, x, y, dataset, batch_size
    )
    times, cpu, counts = time_rounds(
        epochs, rounds, log, f"speed {preset}", min_seconds
    )
    median, median_cpu = pooled_medians(times), pooled_medians(cpu)
    figure, figure_cpu = pooled_quartiles(times), pooled_quartiles(cpu)
    first_median = {k: statistics.median(v) for k, v in first.items()}
    alone_first = first_median["student_alone"]
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
            threads=threads,
            epochs_per_unit=counts,
            temperature=models.TEMPERATURE,
            alpha=models.ALPHA,
            teacher_params=int(teacher.count_params()),
            student_params=int(new_student().count_params()),
        ),
        # Medians of every epoch of every round.
        "median_epoch_seconds": median,
        "min_epoch_seconds": {
            k: min(t for unit in v for t in unit) for k, v in times.items()
        },
        "epoch_seconds": times,
        # Process CPU time (all threads).
        "median_epoch_cpu_seconds": median_cpu,
        "epoch_cpu_seconds": cpu,
        # First quartiles of every epoch of every round: the figures the
        # ratios (and the goals) read (`pooled_quartiles`).
        "q1_epoch_seconds": figure,
        "q1_epoch_cpu_seconds": figure_cpu,
        "cache_build_seconds": cache_seconds,
        "ratios": ratios(figure),
        "ratios_cpu": ratios(figure_cpu),
        # The same ratios round by round: their spread.
        "round_ratios": round_ratios(times),
        "round_ratios_cpu": round_ratios(cpu),
        "goals": {k: v for k, v in GOALS.items() if v is not None},
        # Process CPU time is steadier than wall time on a shared machine.
        "goals_read_from": "ratios_cpu",
        "first_step_seconds": first,
        "first_step_ratios": {
            f"{k}/student_alone": first_median[k] / alone_first
            for k in ("online", "keras")
        },
    }


def _set_threads(threads):
    """Sets TensorFlow's thread pools to `threads` threads (0: leaves
    them), before they exist."""
    if not threads:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError as error:
        raise RuntimeError(
            f"threads={threads} needs a fresh process: TensorFlow has "
            "already started its thread pools in this one. Run with "
            "processes > 1 (each is fresh) or threads=0."
        ) from error


def table(result):
    """A plain-text summary of a speed benchmark result."""
    rows = [
        [
            label,
            f"{result['median_epoch_seconds'][k]:.3f}",
            f"{result['min_epoch_seconds'][k]:.3f}",
            f"{result['q1_epoch_seconds'][k]:.3f}",
            f"{result['q1_epoch_cpu_seconds'][k]:.3f}",
        ]
        for k, label in VARIANTS.items()
    ]
    text = format_table(
        [
            "variant",
            "median s/epoch",
            "min s/epoch",
            "q1 s/epoch",
            "q1 CPU s/epoch",
        ],
        rows,
    )
    goals = result["goals"]
    lines = [text, "", f"cache build: {result['cache_build_seconds']:.2f} s"]
    lines.append(
        f"{'ratio':26s} wall   by round [IQR]        "
        "CPU    by round [IQR]        goal"
    )
    for name, wall in result["ratios"].items():
        goal = goals.get(name)
        cpu_value = result["ratios_cpu"][name]
        verdict = (
            ""
            if goal is None
            else f"<= {goal:.2f} " + ("met" if cpu_value <= goal else "missed")
        )
        lines.append(
            f"{name:26s} {wall:.3f}  "
            f"{_spread(result['round_ratios'][name]):21s} {cpu_value:.3f}  "
            f"{_spread(result['round_ratios_cpu'][name]):21s} {verdict}"
        )
    first = result["first_step_seconds"]
    lines.append("")
    lines.append(
        "first finished step of a fresh model (s, median): "
        + ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in first.items())
    )
    return "\n".join(lines)


def _spread(summary):
    return f"{summary['median']:.3f} [{summary['q1']:.3f}-{summary['q3']:.3f}]"


if __name__ == "__main__":
    _arguments = json.loads(sys.argv[1])
    _result = run_one(
        **_arguments, log=lambda line: print(line, file=sys.stderr, flush=True)
    )
    print(json.dumps(_result))
