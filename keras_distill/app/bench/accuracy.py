"""The accuracy benchmark behind `keras-distill bench accuracy`.

It runs published distillation protocols on MNIST-5k (4,000 train, 1,000
test images, fixed split) over several seeds and records the test errors
of the teacher, the student trained from scratch, our distilled students
and `keras.distillation.Distiller` configured correctly, on the same
teacher, data and seeds. Every model of a seed reads the same batches.
"""

import functools

import keras

from keras_distill import losses
from keras_distill.app.bench import common
from keras_distill.app.bench.options import DEFAULT_VARIANTS
from keras_distill.app.bench.options import PROTOCOLS
from keras_distill.app.bench.options import VARIANTS
from keras_distill.app.environment import versions
from keras_distill.app.report import format_table
from keras_distill.distiller import Distiller
from keras_distill.teachers import TeacherCache

# The FitNets hint of the `kd_hint` variant: the last hidden layers.
HINT_LAYERS = {
    "hinton": ("dense_2", "dense_2"),
    "kerasio": ("conv_2", "conv_2"),
}
# DKD: mdistiller's loss weights (alpha=1, beta=8 and a supervised weight
# equal to the DKD weight); its warm-up scaled to these short runs.
DKD_WARMUP_EPOCHS = 5


def check_variants(variants):
    """Raises a `ValueError` naming any unknown variant."""
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ValueError(
            "Invalid value for argument `variants`. Expected some of "
            f"{list(VARIANTS)}. Received: {unknown}"
        )


def train_teacher(protocol, seed_data, epochs):
    """The protocol's teacher, trained from labels."""
    model = common.build(protocol["teacher"], seed_data, seed_data.seed)
    shifted = protocol["teacher_augment"] == "shift"
    train = seed_data.shifted if shifted else seed_data.data.train
    return common.fit_from_labels(model, seed_data, epochs, train)


def new_student(protocol, seed_data):
    """The protocol's student, with the same initial weights every time."""
    return common.build(protocol["student"], seed_data, seed_data.seed + 1)


def variant_losses(name, protocol, variant):
    """The distillation losses and the student loss weight of a variant."""
    kd = losses.LogitsDistillation(protocol["temperature"])
    if variant == "dkd":
        dkd = losses.DKD(
            temperature=protocol["temperature"],
            warmup_epochs=DKD_WARMUP_EPOCHS,
        )
        return [dkd], 0.5
    if variant == "kd_hint":
        return [kd, losses.FeatureDistillation(*HINT_LAYERS[name])], 0.1
    return [kd], protocol["alpha"]


def distill(name, protocol, teacher, seed_data, variant, epochs):
    """A student distilled by `keras_distill.Distiller` (`variant` is one
    of `kd`, `kd_shift`, `dkd`, `kd_hint`)."""
    student = new_student(protocol, seed_data)
    chosen, alpha = variant_losses(name, protocol, variant)
    distiller = Distiller(teacher, student, chosen, student_loss_weight=alpha)
    distiller.compile("adam", common.cross_entropy())
    if variant == "kd_shift":
        train = seed_data.shifted
    elif variant == "kd":
        train = cached_batches(teacher, seed_data)
    else:
        train = seed_data.data.train
    common.fit(distiller, train, epochs, seed_data.resumable)
    return student


def cached_batches(teacher, seed_data):
    """`data.train`'s batches, in its order, with the teacher's outputs
    computed once (a `TeacherCache`) rather than at every step."""
    arrays = seed_data.arrays
    cache = TeacherCache(teacher, arrays.x_train, verbose=0)
    with seed_data.resumable:
        return cache.dataset(
            arrays.x_train,
            arrays.y_train,
            batch_size=seed_data.batch_size,
            seed=seed_data.seed,
        )


def distill_with_keras(protocol, teacher, seed_data, epochs):
    """A student distilled by `keras.distillation.Distiller`, configured
    as its documentation advises (KL on softened probabilities)."""
    student = new_student(protocol, seed_data)
    distiller = keras.distillation.Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=keras.distillation.LogitsDistillation(
            temperature=protocol["temperature"],
            loss=keras.losses.KLDivergence(),
        ),
        student_loss_weight=protocol["alpha"],
    )
    distiller.compile("adam", loss=common.cross_entropy())
    common.fit(distiller, seed_data.data.train, epochs, seed_data.resumable)
    return student


def run_seed(name, seed_data, variants, epochs, timer):
    """Trains every model of one protocol and seed, recording errors."""
    protocol = PROTOCOLS[name]
    arrays, prefix = seed_data.arrays, f"{name} seed {seed_data.seed}"
    teacher = timer(
        "teacher",
        lambda: train_teacher(protocol, seed_data, epochs),
        arrays,
        prefix,
    )
    timer(
        "scratch",
        lambda: common.fit_from_labels(
            new_student(protocol, seed_data), seed_data, epochs
        ),
        arrays,
        prefix,
    )
    for variant in variants:
        if variant == "keras":
            args = (distill_with_keras, protocol, teacher, seed_data, epochs)
        else:
            args = (distill, name, protocol, teacher, seed_data, variant)
            args += (epochs,)
        timer(variant, functools.partial(*args), arrays, prefix)


def ratios(errors):
    """Each distilled student's errors over scratch's, KD over keras and
    DKD over KD."""
    out = {
        f"{k}/scratch": common.ratio(v, errors["scratch"])
        for k, v in errors.items()
        if k not in ("teacher", "scratch")
    }
    for a, b in (("kd", "keras"), ("dkd", "kd")):
        if a in errors and b in errors:
            out[f"{a}/{b}"] = common.ratio(errors[a], errors[b])
    return out


def summary(protocol, timer, seeds, epochs, batch_size, n):
    """The JSON entry of one protocol."""
    return {
        "config": dict(protocol, epochs=epochs, batch_size=batch_size),
        "seeds": list(seeds[: len(timer.errors["teacher"])]),
        **common.errors_summary(timer, n),
        "ratios": ratios(timer.errors),
    }


def run(
    protocols=("hinton", "kerasio"),
    variants=DEFAULT_VARIANTS,
    seeds=(0, 1, 2),
    epochs=40,
    batch_size=64,
    dataset="mnist5k",
    output=None,
    log=print,
):
    """Runs the accuracy benchmark; see the module docstring.

    Args:
        protocols: Names from `PROTOCOLS`.
        variants: Distilled students to train, from `VARIANTS`: `kd` (KD,
            the teacher's outputs from a `TeacherCache`), `kd_shift` (KD
            with the same random shifts for teacher and student), `keras`
            (`keras.distillation.Distiller`), `dkd` and `kd_hint` (KD plus
            a FitNets hint between the last hidden layers).
        seeds: One run per seed.
        epochs: Epochs of every training (teacher and students).
        batch_size: Batch size.
        dataset: A data source (MNIST-5k by default).
        output: A JSON file to write (atomically) after every seed, or
            None.
        log: A function that prints a progress line.

    Returns:
        The result dict (also written to `output`).

    Raises:
        ValueError: If a variant is unknown.
    """
    check_variants(variants)
    result = {"versions": versions(), "dataset": dataset, "protocols": {}}
    for name in protocols:
        timer = common.Timer(("teacher", "scratch", *variants), log)
        for seed in seeds:
            seed_data = common.seed_data(dataset, batch_size, seed)
            run_seed(name, seed_data, variants, epochs, timer)
            n = len(seed_data.arrays.y_test)
            result["protocols"][name] = summary(
                PROTOCOLS[name], timer, seeds, epochs, batch_size, n
            )
            common.write_json(output, result)  # a cut run keeps its seeds
    return result


def table(result):
    """A plain-text summary of an accuracy benchmark result."""
    used = {k for p in result["protocols"].values() for k in p["mean_error"]}
    keys = ["teacher", "scratch"] + [k for k in VARIANTS if k in used]
    header = ["protocol"] + [VARIANTS.get(k, k) for k in keys]
    rows = []
    for name, p in result["protocols"].items():
        errors = p["mean_error"]
        rows.append(
            [name]
            + [f"{100 * errors[k]:.2f}%" if k in errors else "-" for k in keys]
        )
    lines = [format_table(header, rows), ""]
    for name, p in result["protocols"].items():
        shown = ", ".join(
            f"{k} {v:.2f}" for k, v in p["ratios"].items() if v is not None
        )
        seeds = p["seeds"]
        lines.append(f"{name}: mean test error over seeds {seeds}; {shown}")
    return "\n".join(lines)
