"""The `keras-distill` command.

```
keras-distill demo                      # the whole job on MNIST-5k
keras-distill train-teacher --run DIR   # the steps one at a time
keras-distill distill --run DIR
keras-distill scratch --run DIR
keras-distill evaluate --run DIR
keras-distill export --run DIR --quantize int8 float16
keras-distill report --run DIR
keras-distill bench accuracy            # benchmarks, JSON output
```

Every run option can come from `--config run.yaml` (YAML or JSON); flags
given on the command line override the file, which overrides the run
directory's saved `config.json`, which overrides the defaults.
"""

import argparse
import dataclasses
import difflib
import os
import re
import shutil
import sys

import keras_distill
from keras_distill._utils import import_tensorflow_quietly
from keras_distill._utils import quiet_native_output
from keras_distill.app import bench
from keras_distill.app.config import AUGMENTS
from keras_distill.app.config import CONFIG_FILE
from keras_distill.app.config import MODELS
from keras_distill.app.config import OPTIMIZERS
from keras_distill.app.config import RECIPE_DEFAULTS
from keras_distill.app.config import RECIPES
from keras_distill.app.config import STRATEGIES
from keras_distill.app.config import RunConfig
from keras_distill.app.config import read_config_file

# The phases import TensorFlow: they are imported inside the functions that
# run them, once the arguments are parsed and TensorFlow has started
# quietly (`--help` and a usage error answer without it).


class _Parser(argparse.ArgumentParser):
    """argparse without abbreviations, naming the option meant.

    `--data digits` is refused (not read as `--dataset` or `--data-dir`),
    with the closest real option names.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        options = _option_strings(self)
        for unknown in re.findall(r"(--?[\w-]+)", message):
            if unknown in options:
                continue
            close = [o for o in options if o.startswith(unknown)]
            close = close or difflib.get_close_matches(unknown, options, n=2)
            if close:
                message += f" (did you mean {' or '.join(close)}?)"
        super().error(message)


DEFAULT_RUN = os.path.join("saved_models", "demo")

PHASES = {
    "train-teacher": "Train the teacher (reused if already trained).",
    "distill": "Distill the student from the run's teacher.",
    "scratch": "Train the same student from labels alone, for comparison.",
    "evaluate": "Evaluate every trained model of the run on the test split.",
    "export": "Export the distilled student (and teacher) to TFLite.",
    "report": "Write report.md and the plots, and print the table.",
    "compare": (
        "Compare the distilled student with the teacher pruned to 50, 75 "
        "and 90 per cent and quantized, with the student trained with "
        "label smoothing, input noise or teacher-free KD, and with a "
        "transfer model from the teacher's first layers: test error "
        "against compressed TFLite bytes (frontier.md, frontier.json, "
        "frontier.png)."
    ),
}


def _option_strings(parser):
    """Every option of a parser and of its subcommands."""
    options = []
    for action in parser._actions:
        options.extend(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                options.extend(_option_strings(sub))
    return list(dict.fromkeys(options))


def _recipe_defaults(name):
    """`"4.0 for kd, ..."`: each recipe's default for `name`."""
    return ", ".join(
        f"{values[name]:g} for {recipe}"
        for recipe, values in RECIPE_DEFAULTS.items()
        if values.get(name) is not None
    )


def _run_options(parser):
    group = parser.add_argument_group("run options (override --config)")
    group.add_argument(
        "--run",
        default=None,
        help=f"run directory (default: {DEFAULT_RUN})",
    )
    group.add_argument("--config", help="a YAML or JSON run configuration")
    group.add_argument(
        "--dataset",
        help="mnist5k (default), digits, tfds:<name>, a .npz file, or a "
        "folder of images or text files in class subfolders",
    )
    group.add_argument(
        "--test-dataset", help="a separate test folder (same classes)"
    )
    group.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        metavar=("HEIGHT", "WIDTH"),
        help="a folder's image size (default: the student's input size)",
    )
    group.add_argument("--data-dir", help="TFDS data directory")
    models = ", ".join(MODELS)
    group.add_argument(
        "--teacher",
        help="teacher: a zoo name (" + models + "), a trained .keras file "
        "(used as it is, never retrained), a factory package.module:function"
        ", or a JSON Keras model config",
    )
    group.add_argument(
        "--student",
        help="student: the same forms (a .keras file starts from its "
        "weights)",
    )
    group.add_argument(
        "--teacher-preprocessing",
        choices=("auto", "none"),
        help="auto (default): resize the teacher's inputs to its own size",
    )
    group.add_argument(
        "--teacher-scale",
        type=float,
        help="a factor for the teacher's inputs (e.g. 255 for 0..255)",
    )
    group.add_argument(
        "--temperature",
        type=float,
        help="temperature T (default: the recipe's; "
        + _recipe_defaults("temperature")
        + ")",
    )
    group.add_argument(
        "--alpha",
        type=float,
        help="weight of the student's own loss (default: the recipe's; "
        + _recipe_defaults("alpha")
        + ")",
    )
    group.add_argument(
        "--loss",
        action="append",
        dest="losses",
        help="a distillation loss by registry name, e.g. kd, dkd, rkd "
        "(repeatable)",
    )
    group.add_argument(
        "--feature",
        action="append",
        dest="features",
        metavar="TEACHER_LAYER:STUDENT_LAYER",
        help="add a FitNets hint between two named layers (repeatable)",
    )
    group.add_argument(
        "--loss-weight",
        action="append",
        type=float,
        dest="loss_weights",
        help="weight of each distillation loss, in order (repeatable)",
    )
    group.add_argument("--epochs", type=int, help="student epochs")
    group.add_argument("--teacher-epochs", type=int, help="teacher epochs")
    group.add_argument("--batch-size", type=int)
    group.add_argument("--optimizer", choices=OPTIMIZERS)
    group.add_argument("--learning-rate", type=float)
    group.add_argument("--seed", type=int)
    group.add_argument("--validation-split", type=float)
    group.add_argument(
        "--augment",
        choices=AUGMENTS,
        help="students' augmentation (default: shift, random 2-pixel "
        "shifts, for images of at least 16x16 pixels; none below, and for "
        "inputs that are not images)",
    )
    group.add_argument(
        "--teacher-augment",
        choices=("none", "shift"),
        help="teacher's augmentation (default: as for --augment)",
    )
    group.add_argument(
        "--recipe",
        choices=RECIPES,
        help="kd (default), reverse, born-again or mutual",
    )
    group.add_argument("--generations", type=int, help="born-again generations")
    group.add_argument(
        "--quantization-aware-epochs",
        type=int,
        help="epochs of int8 quantization-aware distillation after the "
        "float one (default 0: none)",
    )
    group.add_argument(
        "--quantize",
        nargs="+",
        choices=("float32", "float16", "dynamic", "int8"),
        help="TFLite variants to export",
    )
    group.add_argument(
        "--strategy",
        choices=STRATEGIES,
        help="tf.distribute strategy (multi-worker reads TF_CONFIG)",
    )
    group.add_argument(
        "--backup-dir",
        help="resume a killed training phase from backups kept here",
    )
    group.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=None,
        help="Keras' training verbosity (default: bar on a terminal)",
    )


def build_parser():
    """Returns the `argparse` parser of the `keras-distill` command."""
    parser = _Parser(
        prog="keras-distill",
        description=(
            "Knowledge distillation for Keras 3 on TensorFlow: train a "
            "teacher, distill a student, compare it with the same student "
            "trained from scratch, export it to TFLite, and report."
        ),
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"keras-distill {keras_distill.__version__}",
    )
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=_Parser
    )
    demo = sub.add_parser(
        "demo",
        help="the whole job on MNIST-5k, with no network",
        description=(
            "Train a teacher, distill a student, train the same student "
            "from scratch, evaluate all three, export the student to "
            "TFLite (float32 and int8) and print the comparison table."
        ),
    )
    _run_options(demo)
    for name, text in PHASES.items():
        phase = sub.add_parser(name, help=text, description=text)
        _run_options(phase)
        if name == "train-teacher":
            phase.add_argument(
                "--force", action="store_true", help="retrain the teacher"
            )
        if name == "compare":
            phase.add_argument(
                "--prune-epochs",
                type=int,
                default=4,
                help="fine-tuning epochs of each pruned model",
            )
            phase.add_argument(
                "--seeds",
                type=int,
                nargs="+",
                help="more seeds: each trains its own teacher and students "
                "in RUN-seedN/ and the frontier averages them",
            )
    bench.add_arguments(
        sub.add_parser(
            "bench", help="benchmarks (JSON output)", description="Benchmarks."
        )
    )
    return parser


def resolve_config(args):
    """The run's config: defaults < run dir's config.json < --config < flags.

    Args:
        args: The parsed arguments.

    Returns:
        `(run_path, RunConfig)`.
    """
    path = args.run or DEFAULT_RUN
    values = {}
    saved = os.path.join(path, CONFIG_FILE)
    if os.path.exists(saved):
        values.update(read_config_file(saved))
    if args.config:
        values.update(read_config_file(args.config))
    for field in RunConfig.fields():
        value = getattr(args, field, None)
        if value is not None:
            values[field] = value
    return path, RunConfig.from_dict(values)


def _start_runtime_quietly(run):
    """Starts TensorFlow's runtime, after the run's multi-worker strategy.

    A `MultiWorkerMirroredStrategy` configures collective ops, which
    TensorFlow accepts only before its runtime starts: it is created
    first. Then the runtime's native start-up lines are held back.
    """
    if run.config.strategy == "multi-worker":
        run.strategy  # noqa: B018 (created now, before any TensorFlow op)
    with quiet_native_output():
        import tensorflow as tf  # here: after the strategy, quietly

        tf.constant(0.0)  # initializes the runtime, quietly


def _log(*args):
    print(*args, flush=True)


def run_command(args, log=_log):
    """Runs one parsed command. Returns the process exit status."""
    if args.command == "bench":
        return bench.main(args, log=log)
    from keras_distill.app.run import Run  # TensorFlow (see the top)
    from keras_distill.app.run import check_data
    from keras_distill.app.rundir import check_phase

    path, config = resolve_config(args)
    created = _first_missing(path)
    try:
        # Everything is checked before the run directory is written: the
        # data loads (as arrays: no TensorFlow op may run before a
        # multi-worker strategy exists), the phase has what it needs.
        check_data(config)
        check_phase(args.command, path, config)
        run = Run(path, config, verbose=args.verbose, log=log)
        _start_runtime_quietly(run)
        return _run_phases(args, run, log)
    except BaseException:
        if created is not None and _only_config_in(created):
            shutil.rmtree(created, ignore_errors=True)
        raise


def _first_missing(path):
    """The outermost folder of `path` that does not exist yet, or None."""
    path = os.path.abspath(path)
    missing = None
    while not os.path.exists(path):
        missing = path
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return missing


def _only_config_in(folder):
    """Whether a folder holds nothing but (folders of) run configs."""
    for _, _, files in os.walk(folder):
        if any(name != CONFIG_FILE for name in files):
            return False
    return True


def _run_phases(args, run, log):
    command = args.command
    if command == "demo":
        run.train_teacher()
        run.distill()
        run.scratch()
        run.evaluate()
        run.export()
        log("")
        log(run.report())
        log(f"\nEverything is in {run.path}/ (report.md, plots, models).")
    elif command == "train-teacher":
        run.train_teacher(force=args.force)
    elif command == "distill":
        run.distill()
    elif command == "scratch":
        run.scratch()
    elif command == "evaluate":
        run.evaluate()
    elif command == "export":
        run.export(args.quantize)
        log(run.report())
    elif command == "report":
        log(run.report())
    elif command == "compare":
        _compare(args, run, log)
    return 0


def _compare(args, run, log):
    """`keras-distill compare`: one run's frontier, or several seeds'
    (each trained in its own run directory) averaged in `run`."""
    from keras_distill.app import compare  # TensorFlow (see the top)
    from keras_distill.app.run import Run

    results = [compare.compare(run, prune_epochs=args.prune_epochs, log=log)]
    for seed in args.seeds or []:
        if seed == run.config.seed:
            continue
        config = dataclasses.replace(run.config, seed=seed)
        other = Run(f"{run.path}-seed{seed}", config, run.verbose, log=log)
        other.train_teacher()
        other.distill()
        other.scratch()
        results.append(compare.compare(other, args.prune_epochs, log=log))
    result = results[0]
    if len(results) > 1:
        result = compare.aggregate(results)
        compare.write(result, run)
    log(f"\nOn the front: {', '.join(result['front'])}")
    log(f"Written: {run.file('frontier.md')}, frontier.png, frontier.json")


def main(argv=None):
    """Runs the command; returns its exit status.

    Args:
        argv: The arguments, without the program name. Defaults to
            `sys.argv[1:]`.

    Returns:
        0 on success, 1 when the job fails with a clear error (printed
        without a traceback), 2 on a usage error.
    """
    parser = build_parser()  # without TensorFlow: `--help` answers at once
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    import_tensorflow_quietly()
    keras_distill.register_all()
    try:
        return run_command(args)
    except (ValueError, FileNotFoundError, OSError, ImportError) as error:
        print(f"keras-distill: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
