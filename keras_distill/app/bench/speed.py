"""The speed benchmark behind `keras-distill bench speed`.

Every variant trains (or runs) on the same data with the same models, in
one process; after a warm-up epoch each, the variants take turns (A B C ...
A B C ...) so that a slow patch of a shared machine hits them all, and the
median epoch time of each is reported.

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


def _one_epoch(model, data):
    return lambda: model.fit(data, epochs=1, verbose=0, shuffle=False)


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
    """One epoch of each variant, as a function of no argument.

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
        "student_alone": _one_epoch(alone, dataset),
        "teacher_inference": lambda: teacher.predict(
            x, batch_size=batch_size, verbose=0
        ),
        "online": _one_epoch(_ours(teacher, new_student()), dataset),
        "cached": _one_epoch(_ours(teacher, new_student()), cached),
        "keras": _one_epoch(_keras(teacher, new_student()), dataset),
        "keras_io": _one_epoch(_keras_io(teacher, new_student()), dataset),
        "online_feature": _one_epoch(
            _ours(teacher, new_student(), feature=True), dataset
        ),
        "keras_feature": _one_epoch(
            _keras(teacher, new_student(), feature=True), dataset
        ),
        "bound": _bound_epoch(
            teacher, new_student(), keras.optimizers.Adam(), dataset
        ),
    }
    return epochs, cache_seconds


def time_rounds(epochs, rounds, log, prefix):
    """Times `rounds` turns of every epoch function after a warm-up.

    Returns:
        `(wall seconds by variant, process CPU seconds by variant)`, lists
        of one value per round.
    """
    times = {k: [] for k in epochs}
    cpu = {k: [] for k in epochs}
    for epoch in epochs.values():  # warm-up: tracing, first allocations
        epoch()
    for r in range(rounds):
        for k, epoch in epochs.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            epoch()
            times[k].append(time.perf_counter() - start)
            cpu[k].append(time.process_time() - start_cpu)
        log(
            f"[{prefix}] round {r + 1}/{rounds}: "
            + " ".join(f"{k}={times[k][-1]:.2f}s" for k in epochs)
        )
    return times, cpu


def ratios(values):
    """The ratios of `GOALS` between per-variant values."""
    out = {}
    for pair in GOALS:
        a, b = pair.split("/")
        out[pair] = values[a] / values[b]
    return out


def run(preset="mlp", quick=False, rounds=5, batch_size=64, log=print):
    """Runs the speed benchmark.

    Args:
        preset: A name from `PRESETS`.
        quick: A short run (512 examples, 3 timed rounds) for smoke tests.
        rounds: Timed epochs per variant (after one warm-up epoch each).
        batch_size: Batch size.
        log: A function that prints a progress line.

    Returns:
        The result dict: versions, configuration, median epoch seconds per
        variant, the cache's build time and the ratios the goals use.

    Raises:
        ValueError: If `preset` is unknown.
    """
    check_choice("preset", preset, sorted(PRESETS))
    rounds = 3 if quick else rounds
    x, y, dataset = _data(quick, batch_size)
    shape, classes = x.shape[1:], 10
    keras.utils.set_random_seed(0)
    teacher = zoo.build(PRESETS[preset]["teacher"], shape, classes, seed=0)

    def new_student():
        return zoo.build(PRESETS[preset]["student"], shape, classes, seed=1)

    epochs, cache_seconds = epochs_of_variants(
        teacher, new_student, x, y, dataset, batch_size
    )
    times, cpu = time_rounds(epochs, rounds, log, f"speed {preset}")
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
    lines.append(f"{'ratio':22s} wall   CPU    goal")
    for name, value in result["ratios"].items():
        goal = goals.get(name)
        cpu_value = result["ratios_cpu"][name]
        verdict = "" if goal is None else f"<= {goal:.2f}"
        lines.append(f"{name:22s} {value:.3f}  {cpu_value:.3f}  {verdict}")
    return "\n".join(lines)
