"""The speed benchmark behind `keras-distill bench speed`.

Every variant trains (or runs) on the same data with the same models, in
one process; after a warm-up epoch each, the variants take turns (A B C ...
A B C ...) so that a slow patch of a shared machine hits them all, and the
median epoch time of each is reported.

Variants:
    a. the student alone (`student.fit`);
    b. the teacher's inference over the data;
    c. ours, online (the teacher runs every step);
    d. ours from a `TeacherCache` (the cache's build time apart);
    e. `keras.distillation.Distiller` with `LogitsDistillation`;
    f. the keras.io Distiller example's pattern, written here as the
       baseline;
    g. ours with a feature loss (Keras' `FeatureDistillation` on a named
       layer) plus logits;
    h. Keras' distiller with the same two losses;
    i. the physical bound: one `tf.function` with the teacher's forward
       pass, the student's forward and backward passes and the optimizer
       update, without metrics or callbacks.

The feature loss compares the layer named `logits` in both models, the
only layer the reference teacher and student share in shape; naming it
sends both distillers through their intermediate-feature code path.
"""

import statistics
import time

PRESETS = {
    "mlp": dict(teacher="mlp-large", student="mlp-small"),
    "mnist-cnn": dict(teacher="cnn-large", student="cnn-small"),
}
VARIANTS = "abcdefghi"
TEMPERATURE = 4.0
ALPHA = 0.1


def _keras_io_distiller():
    """The keras.io example's Distiller (Keras 3 version), as a baseline."""
    import keras
    from keras import ops

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
    """Variant (i): the least work an online distillation epoch can do."""
    import keras
    import tensorflow as tf

    from keras_distill.losses.logits import soft_kl

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
    """
    import keras
    import tensorflow as tf

    from keras_distill import losses
    from keras_distill import zoo
    from keras_distill.data import load_arrays
    from keras_distill.distiller import Distiller
    from keras_distill.run import versions
    from keras_distill.teachers import TeacherCache

    if preset not in PRESETS:
        raise ValueError(
            f"Invalid value for argument `preset`. Expected one of "
            f"{sorted(PRESETS)}. Received: preset={preset!r}"
        )
    if quick:
        rounds = 3
    arrays = load_arrays("mnist5k")
    x, y = arrays.x_train, arrays.y_train
    if quick:
        x, y = x[:512], y[:512]
    shape, classes = x.shape[1:], 10
    keras.utils.set_random_seed(0)
    teacher = zoo.build(PRESETS[preset]["teacher"], shape, classes, seed=0)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def student():
        return zoo.build(PRESETS[preset]["student"], shape, classes, seed=1)

    dataset = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(x), seed=0)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )

    def fitter(model, data):
        return lambda: model.fit(data, epochs=1, verbose=0, shuffle=False)

    def feature_loss():
        return keras.distillation.FeatureDistillation(
            loss="mse", teacher_layer_name="logits", student_layer_name="logits"
        )

    epochs = {}
    s = student()
    s.compile("adam", ce, metrics=["accuracy"])
    epochs["a"] = fitter(s, dataset)
    epochs["b"] = lambda: teacher.predict(x, batch_size=batch_size, verbose=0)
    ours = Distiller(teacher, student(), student_loss_weight=ALPHA)
    ours.compile("adam", ce, metrics=["accuracy"])
    epochs["c"] = fitter(ours, dataset)
    start = time.perf_counter()
    cache = TeacherCache(teacher, x, batch_size=256, verbose=0)
    cache_seconds = time.perf_counter() - start
    cached = Distiller(teacher, student(), student_loss_weight=ALPHA)
    cached.compile("adam", ce, metrics=["accuracy"])
    epochs["d"] = fitter(
        cached, cache.dataset(x, y, batch_size=batch_size, seed=0)
    )
    theirs = keras.distillation.Distiller(
        teacher=teacher,
        student=student(),
        distillation_losses=keras.distillation.LogitsDistillation(
            temperature=TEMPERATURE, loss=keras.losses.KLDivergence()
        ),
        student_loss_weight=ALPHA,
    )
    theirs.compile("adam", loss=ce, metrics=["accuracy"])
    epochs["e"] = fitter(theirs, dataset)
    keras_io = _keras_io_distiller()(student(), teacher)
    keras_io.compile(
        optimizer=keras.optimizers.Adam(),
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
        student_loss_fn=ce,
        distillation_loss_fn=keras.losses.KLDivergence(),
        alpha=ALPHA,
        temperature=TEMPERATURE,
    )
    epochs["f"] = fitter(keras_io, dataset)
    ours_feature = Distiller(
        teacher,
        student(),
        [losses.LogitsDistillation(TEMPERATURE), feature_loss()],
        student_loss_weight=ALPHA,
    )
    ours_feature.compile("adam", ce, metrics=["accuracy"])
    epochs["g"] = fitter(ours_feature, dataset)
    theirs_feature = keras.distillation.Distiller(
        teacher=teacher,
        student=student(),
        distillation_losses=[
            keras.distillation.LogitsDistillation(
                temperature=TEMPERATURE, loss=keras.losses.KLDivergence()
            ),
            feature_loss(),
        ],
        student_loss_weight=ALPHA,
    )
    theirs_feature.compile("adam", loss=ce, metrics=["accuracy"])
    epochs["h"] = fitter(theirs_feature, dataset)
    epochs["i"] = _bound_epoch(
        teacher, student(), keras.optimizers.Adam(), dataset
    )

    times = {k: [] for k in VARIANTS}
    cpu = {k: [] for k in VARIANTS}
    for k in VARIANTS:  # warm-up: tracing, first allocations
        epochs[k]()
    for r in range(rounds):
        for k in VARIANTS:
            start, start_cpu = time.perf_counter(), time.process_time()
            epochs[k]()
            times[k].append(time.perf_counter() - start)
            cpu[k].append(time.process_time() - start_cpu)
        log(
            f"[speed {preset}] round {r + 1}/{rounds}: "
            + " ".join(f"{k}={times[k][-1]:.2f}s" for k in VARIANTS)
        )
    median = {k: statistics.median(v) for k, v in times.items()}
    median_cpu = {k: statistics.median(v) for k, v in cpu.items()}

    def ratios(values):
        pairs = ("c/i", "c/e", "c/f", "g/c", "h/e", "d/a")
        return {p: values[p[0]] / values[p[2]] for p in pairs}

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
            student_params=int(student().count_params()),
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
        "goals": {
            "c/i": 1.05,
            "c/e": 0.95,
            "c/f": 1.00,
            "g/c": 1.15,
            "d/a": 1.10,
        },
    }


LABELS = {
    "a": "student alone (student.fit)",
    "b": "teacher inference",
    "c": "ours, online",
    "d": "ours, cached",
    "e": "keras.distillation.Distiller",
    "f": "keras.io example pattern",
    "g": "ours, logits + feature loss",
    "h": "keras.distillation, logits + feature",
    "i": "bound: one tf.function step",
}


def table(result):
    """A plain-text summary of a speed benchmark result."""
    from keras_distill.report import format_table

    rows = [
        [
            f"({k}) {LABELS[k]}",
            f"{result['median_epoch_seconds'][k]:.3f}",
            f"{result['min_epoch_seconds'][k]:.3f}",
            f"{result['median_epoch_cpu_seconds'][k]:.3f}",
        ]
        for k in VARIANTS
    ]
    text = format_table(
        ["variant", "median s/epoch", "min s/epoch", "median CPU s/epoch"], rows
    )
    goals = result["goals"]
    lines = [text, "", f"cache build: {result['cache_build_seconds']:.2f} s"]
    lines.append("ratio   wall   CPU    goal")
    for name, value in result["ratios"].items():
        goal = goals.get(name)
        cpu_value = result["ratios_cpu"][name]
        verdict = "" if goal is None else f"<= {goal:.2f}"
        lines.append(f"{name:6s}  {value:.3f}  {cpu_value:.3f}  {verdict}")
    return "\n".join(lines)
