"""Benchmarks behind `keras-distill bench`, each writing JSON.

`keras-distill bench accuracy` runs published distillation protocols on
MNIST-5k (4,000 train, 1,000 test images, fixed split) over several seeds
and records the test errors of the teacher, the student trained from
scratch, our distilled student and `keras.distillation.Distiller`
configured correctly, on the same teacher, data and seeds.
"""

import json
import statistics
import time

PROTOCOLS = {
    # Hinton et al. (2015): a 1200-1200 MLP teacher with dropout and
    # shifted inputs; an unregularised 800-800 student.
    "hinton": dict(
        teacher="mlp-large",
        student="mlp-small",
        temperature=4.0,
        alpha=0.1,
        teacher_augment="shift",
    ),
    # The keras.io Distiller example: its CNN teacher and CNN student.
    "kerasio": dict(
        teacher="cnn-large",
        student="cnn-small",
        temperature=8.0,
        alpha=0.1,
        teacher_augment="none",
    ),
}


# Distilled students the accuracy benchmark can train, besides the teacher
# and the student from scratch.
VARIANTS = ("ours", "ours_shift", "keras", "dkd", "kd_hint")
DEFAULT_VARIANTS = ("ours", "ours_shift", "keras")
LABELS = {
    "ours": "KD",
    "ours_shift": "KD+shift",
    "keras": "keras",
    "dkd": "DKD",
    "kd_hint": "KD+hint",
}
# The FitNets hint of the `kd_hint` variant: the last hidden layers.
HINT_LAYERS = {
    "hinton": ("dense_2", "dense_2"),
    "kerasio": ("conv_2", "conv_2"),
}
# DKD: mdistiller's loss weights (alpha=1, beta=8 and a supervised weight
# equal to the DKD weight); its warm-up scaled to these short runs.
DKD_WARMUP_EPOCHS = 5


def add_arguments(parser):
    """Adds the `bench` subcommands to an argparse parser."""
    sub = parser.add_subparsers(dest="bench", metavar="BENCHMARK")
    sub.required = True
    accuracy = sub.add_parser(
        "accuracy",
        help="test errors: teacher, scratch, ours, keras.distillation",
        description=(
            "Accuracy benchmark on MNIST-5k: for each protocol and seed, "
            "train a teacher, the student from scratch, our distilled "
            "student (plain and with the teacher's shifted inputs), and "
            "keras.distillation.Distiller on the same teacher; write JSON."
        ),
    )
    accuracy.add_argument(
        "--protocol",
        nargs="+",
        choices=sorted(PROTOCOLS),
        default=sorted(PROTOCOLS),
    )
    accuracy.add_argument(
        "--variants",
        nargs="+",
        choices=VARIANTS,
        default=list(DEFAULT_VARIANTS),
        help="students to train besides the teacher and the scratch one",
    )
    accuracy.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    accuracy.add_argument("--epochs", type=int, default=40)
    accuracy.add_argument("--batch-size", type=int, default=64)
    accuracy.add_argument("--dataset", default="mnist5k")
    accuracy.add_argument(
        "--output", default="bench_accuracy.json", help="JSON file to write"
    )
    from keras_distill import bench_recipes
    from keras_distill import speed

    recipes = sub.add_parser(
        "recipes",
        help="test errors: born-again, reverse KD, mutual learning, "
        "function matching",
        description=(
            "Recipes benchmark on MNIST-5k, hinton protocol: for each seed, "
            "train the teacher, the student from scratch, plain KD, "
            "function matching, two born-again generations and their "
            "ensemble, the large model from scratch and taught by the "
            "small one (reverse KD), and two students by mutual learning; "
            "write JSON."
        ),
    )
    recipes.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    recipes.add_argument("--epochs", type=int, default=40)
    recipes.add_argument("--batch-size", type=int, default=64)
    recipes.add_argument("--dataset", default="mnist5k")
    recipes.add_argument(
        "--only",
        nargs="+",
        choices=bench_recipes.KEYS,
        metavar="KEY",
        help="train only these models (and those they are trained from): "
        + ", ".join(bench_recipes.KEYS),
    )
    recipes.add_argument(
        "--output", default="bench_recipes.json", help="JSON file to write"
    )
    speed_parser = sub.add_parser(
        "speed",
        help="epoch times: ours online and cached against Keras' distillers",
        description=speed.__doc__.split("\n\n")[0],
    )
    speed_parser.add_argument(
        "--preset", choices=sorted(speed.PRESETS), default="mlp"
    )
    speed_parser.add_argument(
        "--quick", action="store_true", help="512 examples, 3 rounds"
    )
    speed_parser.add_argument("--rounds", type=int, default=5)
    speed_parser.add_argument("--batch-size", type=int, default=64)
    speed_parser.add_argument(
        "--output", default="bench_speed.json", help="JSON file to write"
    )


def main(args, log=print):
    """Runs the benchmark named in `args.bench`; returns an exit status."""
    from keras_distill import bench_recipes
    from keras_distill import speed
    from keras_distill.utils import write_text

    common = dict(batch_size=args.batch_size, log=log)
    if args.bench == "accuracy":
        result = accuracy(
            protocols=args.protocol,
            variants=args.variants,
            seeds=args.seeds,
            epochs=args.epochs,
            dataset=args.dataset,
            output=args.output,  # written after each seed too
            **common,
        )
        text = accuracy_table(result)
    elif args.bench == "recipes":
        result = bench_recipes.run(
            seeds=args.seeds,
            epochs=args.epochs,
            dataset=args.dataset,
            output=args.output,  # written after each seed too
            only=args.only,
            **common,
        )
        text = bench_recipes.table(result)
    else:
        result = speed.run(
            preset=args.preset, quick=args.quick, rounds=args.rounds, **common
        )
        text = speed.table(result)
    write_text(args.output, json.dumps(result, indent=2) + "\n")
    log(text)
    log(f"\nJSON written to {args.output}")
    return 0


def _new_student(c, data, seed):
    """The protocol's student, with the same initial weights every time."""
    import keras

    from keras_distill import zoo

    keras.utils.set_random_seed(seed)
    return zoo.build(
        c["student"], data.input_shape, data.num_classes, seed=seed + 1
    )


def _fit_student_from_scratch(c, data, seed, epochs, keyed):
    model = _new_student(c, data, seed)
    model.compile("adam", _ce(), metrics=["accuracy"])
    _fit(model, data.train, epochs, keyed)
    return model


def _fit(model, train, epochs, keyed):
    """`model.fit`, with epoch k reading pass k of the seed's pipelines.

    `keyed` is the `ResumableData` that recorded them: without it, each
    training would start where the one before it left the shared
    pipeline, and a model's batches would depend on the epochs of the
    models trained before it.
    """
    model.fit(train, epochs=epochs, verbose=0, shuffle=False, callbacks=[keyed])


def _ce():
    import keras

    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _errors(model, arrays):
    from keras_distill.utils import predict

    logits = predict(model, arrays.x_test)
    return int((logits.argmax(-1) != arrays.y_test).sum())


def accuracy(
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
        variants: Distilled students to train, from `VARIANTS`: `ours`
            (KD, the teacher's outputs from a `TeacherCache`), `ours_shift`
            (KD with the same random shifts for teacher and student),
            `keras` (`keras.distillation.Distiller`), `dkd` and `kd_hint`
            (KD plus a FitNets hint between the last hidden layers).
        seeds: One run per seed.
        epochs: Epochs of every training (teacher and students).
        batch_size: Batch size.
        dataset: A data source (MNIST-5k by default).
        output: A JSON file to write (atomically), or None.
        log: A function that prints a progress line.

    Returns:
        The result dict (also written to `output`).
    """
    import keras

    from keras_distill import data as data_module
    from keras_distill import losses
    from keras_distill import zoo
    from keras_distill.callbacks import ResumableData
    from keras_distill.data import shift_augment
    from keras_distill.distiller import Distiller
    from keras_distill.run import versions
    from keras_distill.teachers import TeacherCache
    from keras_distill.utils import write_text

    result = {"versions": versions(), "dataset": dataset, "protocols": {}}
    for name in protocols:
        c = PROTOCOLS[name]
        unknown = sorted(set(variants) - set(VARIANTS))
        if unknown:
            raise ValueError(
                f"Invalid value for argument `variants`. Expected some of "
                f"{list(VARIANTS)}. Received: {unknown}"
            )
        runs = {k: [] for k in ("teacher", "scratch", *variants)}
        seconds = {k: [] for k in runs}
        for seed in seeds:
            # Every training of the seed reads pass k of its pipeline at
            # epoch k (see `_fit`), whatever was trained before it.
            keyed = ResumableData()
            with keyed:
                data = data_module.load(
                    dataset, batch_size=batch_size, seed=seed
                )
                shifted = shift_augment(data.train, seed=seed)
            arrays = data.arrays

            def timed(key, fn):
                start = time.perf_counter()
                model = fn()
                seconds[key].append(round(time.perf_counter() - start, 1))
                runs[key].append(_errors(model, arrays))
                log(
                    f"[{name} seed {seed}] {key}: {runs[key][-1]} errors "
                    f"({seconds[key][-1]} s)"
                )
                return model

            def teacher_fn():
                keras.utils.set_random_seed(seed)
                model = zoo.build(
                    c["teacher"], data.input_shape, data.num_classes, seed=seed
                )
                model.compile("adam", _ce(), metrics=["accuracy"])
                train = (
                    shifted if c["teacher_augment"] == "shift" else data.train
                )
                _fit(model, train, epochs, keyed)
                return model

            teacher = timed("teacher", teacher_fn)
            timed(
                "scratch",
                lambda: _fit_student_from_scratch(c, data, seed, epochs, keyed),
            )

            def ours(train, method="kd"):
                def fn():
                    student = _new_student(c, data, seed)
                    alpha = c["alpha"]
                    chosen = [losses.LogitsDistillation(c["temperature"])]
                    if method == "dkd":
                        alpha = 0.5
                        chosen = [
                            losses.DKD(
                                temperature=c["temperature"],
                                warmup_epochs=DKD_WARMUP_EPOCHS,
                            )
                        ]
                    elif method == "hint":
                        chosen.append(
                            losses.FeatureDistillation(*HINT_LAYERS[name])
                        )
                    distiller = Distiller(
                        teacher, student, chosen, student_loss_weight=alpha
                    )
                    distiller.compile("adam", _ce())
                    batches = train
                    if method == "kd" and train is data.train:
                        # The teacher's outputs once, not at every step: the
                        # cache serves data.train's batches, in its order.
                        cache = TeacherCache(teacher, arrays.x_train, verbose=0)
                        with keyed:
                            batches = cache.dataset(
                                arrays.x_train,
                                arrays.y_train,
                                batch_size=batch_size,
                                seed=seed,
                            )
                    _fit(distiller, batches, epochs, keyed)
                    return student

                return fn

            if "ours" in variants:
                timed("ours", ours(data.train))
            if "ours_shift" in variants:
                timed("ours_shift", ours(shifted))
            if "dkd" in variants:
                timed("dkd", ours(data.train, "dkd"))
            if "kd_hint" in variants:
                timed("kd_hint", ours(data.train, "hint"))

            def keras_fn():
                student = _new_student(c, data, seed)
                distiller = keras.distillation.Distiller(
                    teacher=teacher,
                    student=student,
                    distillation_losses=keras.distillation.LogitsDistillation(
                        temperature=c["temperature"],
                        loss=keras.losses.KLDivergence(),
                    ),
                    student_loss_weight=c["alpha"],
                )
                distiller.compile("adam", loss=_ce())
                _fit(distiller, data.train, epochs, keyed)
                return student

            if "keras" in variants:
                timed("keras", keras_fn)
            # After every seed, so that a long run cut short keeps its part.
            n = len(arrays.y_test)
            result["protocols"][name] = {
                "config": dict(c, epochs=epochs, batch_size=batch_size),
                "seeds": list(seeds[: len(runs["teacher"])]),
                "test_examples": n,
                "errors": runs,
                "train_seconds": seconds,
                "mean_error": {
                    k: statistics.mean(v) / n for k, v in runs.items()
                },
                "ratios": _ratios(runs),
            }
            if output:
                write_text(output, json.dumps(result, indent=2) + "\n")
    return result


def _ratio(a, b):
    return sum(a) / sum(b) if sum(b) else None


def _ratios(runs):
    """Each distilled student's errors over scratch's, and ours/keras."""
    ratios = {
        f"{k}/scratch": _ratio(v, runs["scratch"])
        for k, v in runs.items()
        if k not in ("teacher", "scratch")
    }
    if "ours" in runs and "keras" in runs:
        ratios["ours/keras"] = _ratio(runs["ours"], runs["keras"])
    if "dkd" in runs and "ours" in runs:
        ratios["dkd/ours"] = _ratio(runs["dkd"], runs["ours"])
    return ratios


def accuracy_table(result):
    """A plain-text summary of an accuracy benchmark result."""
    from keras_distill.report import format_table

    keys = ["teacher", "scratch"] + [
        k
        for k in VARIANTS
        if any(k in p["mean_error"] for p in result["protocols"].values())
    ]
    header = ["protocol"] + [LABELS.get(k, k) for k in keys]
    rows = []
    for name, p in result["protocols"].items():
        rows.append(
            [name]
            + [
                f"{100 * p['mean_error'][k]:.2f}%"
                if k in p["mean_error"]
                else "-"
                for k in keys
            ]
        )
    lines = [format_table(header, rows), ""]
    for name, p in result["protocols"].items():
        ratios = ", ".join(
            f"{k} {v:.2f}" for k, v in p["ratios"].items() if v is not None
        )
        lines.append(
            f"{name}: mean test error over seeds {p['seeds']}; {ratios}"
        )
    return "\n".join(lines)
