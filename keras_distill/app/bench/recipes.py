"""The recipes benchmark behind `keras-distill bench recipes`.

On the hinton protocol of `keras-distill bench accuracy` (MNIST-5k, a
1200-1200 MLP teacher trained with ±2-pixel shifts, an 800-800 MLP
student), for each seed it trains and counts test errors of:

- `teacher`, `scratch` (the student from labels), `kd` (plain KD);
- `function_matching`: KD with no supervised term, the teacher and the
  student seeing the same shifted, mixed-up batch
  (`keras_distill.augment`; mixup with a coefficient drawn from
  Beta(1, 1)), at temperature `FM_TEMPERATURE`, trained `FM_PATIENCE`
  times as many epochs ("patient", as Beyer et al. advise: the augmented
  inputs keep it from overfitting) with Adam's learning rate decayed to
  zero along a cosine;
- `born_again_1`, `born_again_2`: the student distilled from `scratch`,
  then from generation 1 (same architecture), and `born_again_ensemble`;
  each generation learns its teacher's outputs at T = 1 (Furlanello et
  al.) and the labels at alpha = 0.5, the defaults of
  `keras_distill.recipes.generation`;
- `large_scratch`, `reverse`: the large architecture from labels, and
  taught by the trained small `scratch` model;
- `mutual_a`, `mutual_b`: two students trained together by deep mutual
  learning (compare with `scratch`, each alone).
"""

import functools
import inspect

import keras

from keras_distill import augment
from keras_distill import recipes
from keras_distill.app.bench import common
from keras_distill.app.bench.options import KEYS
from keras_distill.app.environment import versions
from keras_distill.app.report import format_table
from keras_distill.distiller import Distiller
from keras_distill.recipes import MutualLearning
from keras_distill.teachers import Ensemble

TEACHER, STUDENT = "mlp-large", "mlp-small"
TEMPERATURE, ALPHA = 4.0, 0.1
# Function matching: its mixup's Beta parameter, its longer schedule and
# its temperature (the choices are measured in docs/benchmarks.md).
FM_MIXUP, FM_PATIENCE, FM_TEMPERATURE = 1.0, 3, 2.0
# Born-again generations train at the defaults of `recipes.generation`.
# What each key trains from: `run(only=...)` adds these to its selection.
# The two mutual learners are trained together, so either needs the other.
REQUIRES = {
    "kd": ("teacher",),
    "function_matching": ("teacher",),
    "born_again_1": ("scratch",),
    "born_again_2": ("born_again_1",),
    "born_again_ensemble": ("born_again_1", "born_again_2"),
    "reverse": ("scratch",),
    "mutual_a": ("mutual_b",),
    "mutual_b": ("mutual_a",),
}


def selection(only=None):
    """The keys to train for `only` (None: all), with what they need.

    Args:
        only: Keys of `KEYS`, or None.

    Returns:
        A tuple of keys, in the order of `KEYS`.

    Raises:
        ValueError: If `only` names a key that is not in `KEYS`.
    """
    if only is None:
        return KEYS
    unknown = sorted(set(only) - set(KEYS))
    if unknown or isinstance(only, str):
        raise ValueError(
            f"Invalid value for argument `only`. Expected a list of keys "
            f"from {list(KEYS)}. Received: only={only!r}"
        )
    chosen, todo = set(), list(only)
    while todo:
        key = todo.pop()
        if key not in chosen:
            chosen.add(key)
            todo.extend(REQUIRES.get(key, ()))
    return tuple(k for k in KEYS if k in chosen)


def steps_per_epoch(dataset):
    """The number of batches in one pass of a finite dataset."""
    steps = int(dataset.cardinality())
    if steps < 0:  # unknown: count them
        steps = sum(1 for _ in dataset)
    return steps


def distill(teacher, student, seed_data, epochs, **options):
    """`keras_distill.recipes.generation` (plain KD; a born-again
    generation by default), trained on the seed's batches."""
    distiller = recipes.generation(teacher, student, **options)
    common.fit(distiller, seed_data.data.train, epochs, seed_data.resumable)
    return student


def function_matching(teacher, seed_data, epochs):
    """KD with no labels on shifted, mixed-up batches that the teacher and
    the student share, `FM_PATIENCE` times longer, with Adam's learning
    rate decayed to zero along a cosine."""
    seed = seed_data.seed
    student = common.build(STUDENT, seed_data, seed + 1)
    consistent = augment.ConsistentAugment(
        [
            augment.RandomShift(2, seed=seed),
            augment.Mixup(FM_MIXUP, seed=seed + 1),
        ]
    )
    distiller = Distiller(
        teacher, student, "kd", student_loss_weight=0.0, augment=consistent
    )
    distiller.temperature = FM_TEMPERATURE
    total = epochs * FM_PATIENCE
    steps = total * steps_per_epoch(seed_data.data.train)
    optimizer = keras.optimizers.Adam(
        keras.optimizers.schedules.CosineDecay(1e-3, steps)
    )
    distiller.compile(optimizer, common.cross_entropy())
    common.fit(distiller, seed_data.data.train, total, seed_data.resumable)
    return student


def mutual(seed_data, epochs):
    """Two students trained together by deep mutual learning."""
    a = common.build(STUDENT, seed_data, seed_data.seed + 1, "student_a")
    b = common.build(STUDENT, seed_data, seed_data.seed + 5, "student_b")
    model = MutualLearning([a, b])
    model.compile("adam", common.cross_entropy())
    common.fit(model, seed_data.data.train, epochs, seed_data.resumable)
    return a, b


class _Seed:
    """Trains the selected models of one seed, each at most once."""

    def __init__(self, seed_data, keys, epochs, timer):
        self.data, self.keys, self.epochs = seed_data, keys, epochs
        self.timer, self.trained = timer, {}

    def model(self, architecture, offset):
        return common.build(architecture, self.data, self.data.seed + offset)

    def train(self, key, fn, *args, **kwargs):
        """Trains `key` with `fn(*args, **kwargs)` when it is selected."""
        if key in self.keys:  # else nothing selected needs it
            self.trained[key] = self.timer(
                key,
                functools.partial(fn, *args, **kwargs),
                self.data.arrays,
                f"recipes seed {self.data.seed}",
            )
        return self.trained.get(key)

    def from_labels(self, key, architecture, offset, train=None):
        return self.train(
            key,
            lambda: common.fit_from_labels(
                self.model(architecture, offset), self.data, self.epochs, train
            ),
        )

    def distilled(self, key, teacher, architecture, offset, **options):
        return self.train(
            key,
            lambda: distill(
                teacher,
                self.model(architecture, offset),
                self.data,
                self.epochs,
                **options,
            ),
        )


def run_seed(seed_data, keys, epochs, timer):
    """Trains the selected models of one seed, recording their errors."""
    s = _Seed(seed_data, keys, epochs, timer)
    teacher = s.from_labels("teacher", TEACHER, 0, seed_data.shifted)
    scratch = s.from_labels("scratch", STUDENT, 1)
    kd = dict(temperature=TEMPERATURE, alpha=ALPHA)
    s.distilled("kd", teacher, STUDENT, 1, **kd)
    s.train("function_matching", function_matching, teacher, seed_data, epochs)
    first = s.distilled("born_again_1", scratch, STUDENT, 2)
    second = s.distilled("born_again_2", first, STUDENT, 3)
    s.train("born_again_ensemble", Ensemble, [first, second], temperature=1.0)
    s.from_labels("large_scratch", TEACHER, 4)
    s.distilled("reverse", scratch, TEACHER, 4, temperature=TEMPERATURE)
    peers = {}

    def mutual_a():
        peers["a"], peers["b"] = mutual(seed_data, epochs)
        return peers["a"]

    if s.train("mutual_a", mutual_a) is not None:
        prefix = f"recipes seed {seed_data.seed}"
        timer.record("mutual_b", peers["b"], seed_data.arrays, prefix)


def config(epochs, batch_size):
    """The benchmark's settings, as written in its JSON."""
    defaults = inspect.signature(recipes.generation).parameters
    return dict(
        teacher=TEACHER,
        student=STUDENT,
        temperature=TEMPERATURE,
        alpha=ALPHA,
        epochs=epochs,
        function_matching_epochs=epochs * FM_PATIENCE,
        function_matching_mixup=FM_MIXUP,
        function_matching_temperature=FM_TEMPERATURE,
        function_matching_schedule="cosine decay from 1e-3 to 0",
        born_again_temperature=defaults["temperature"].default,
        born_again_alpha=defaults["alpha"].default,
        batch_size=batch_size,
    )


def ratios(errors):
    """The ratios of errors the recipes are judged by."""
    pairs = (
        ("born_again_2", "born_again_1"),
        ("born_again_1", "scratch"),
        ("reverse", "large_scratch"),
        ("mutual_a", "scratch"),
        ("function_matching", "kd"),
        ("function_matching", "teacher"),
        ("function_matching", "scratch"),
    )
    return {
        f"{a}/{b}": common.ratio(errors[a], errors[b])
        for a, b in pairs
        if a in errors and b in errors
    }


def run(
    seeds=(0, 1, 2),
    epochs=40,
    batch_size=64,
    dataset="mnist5k",
    output=None,
    log=print,
    only=None,
):
    """Runs the recipes benchmark; see the module docstring.

    Every model of a seed reads the same batches whatever else is trained,
    so a selection (`only`) reproduces the errors of a full run.

    Args:
        seeds: One run per seed.
        epochs: Epochs of every training.
        batch_size: Batch size.
        dataset: A data source (MNIST-5k by default).
        output: A JSON file to write after each seed (atomically), or None.
        log: A function that prints a progress line.
        only: Keys of `KEYS` to train (with the models they are trained
            from, `REQUIRES`), or None for all of them.

    Returns:
        The result dict: per-seed errors for every key trained, mean
        errors, and those ratios the goals use whose two keys were
        trained.

    Raises:
        ValueError: If `only` names a key that is not in `KEYS`.
    """
    keys = selection(only)
    timer = common.Timer(keys, log)
    result = {"versions": versions(), "dataset": dataset}
    for seed in seeds:
        seed_data = common.seed_data(dataset, batch_size, seed)
        run_seed(seed_data, keys, epochs, timer)
        n = len(seed_data.arrays.y_test)
        result.update(
            config=config(epochs, batch_size),
            seeds=list(seeds[: len(timer.errors[keys[0]])]),
            **common.errors_summary(timer, n),
            ratios=ratios(timer.errors),
        )
        common.write_json(output, result)  # a cut run keeps its seeds
    return result


def table(result):
    """A plain-text summary of a recipes benchmark result."""
    rows = [
        [k, f"{100 * result['mean_error'][k]:.2f}%", str(result["errors"][k])]
        for k in KEYS
        if k in result["errors"]
    ]
    lines = [format_table(["model", "mean error", "errors per seed"], rows)]
    lines.append("")
    lines.append(
        ", ".join(
            f"{k} {v:.2f}" for k, v in result["ratios"].items() if v is not None
        )
    )
    return "\n".join(lines)
