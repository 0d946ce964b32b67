"""Distillation against pruning and quantization, on a run's own data.

`keras-distill compare --run DIR` takes a run's trained teacher, scratch
student and distilled student and adds the alternatives a user weighs
before compressing a model: the teacher pruned to 50, 75 and 90%
(magnitude pruning while fine-tuned, `keras_distill.prune.Pruner`:
the sparsity grows over the first half of `prune_epochs` with the run's
optimizer, the second half recovers), int8
versions of the teacher and of the pruned teachers, the distilled student
in int8, the distilled student pruned to 50% while it keeps learning
from the unpruned teacher, and the distilled student fine-tuned
quantization-aware in int8 (`keras_distill.quantization`, from the
teacher, for `prune_epochs`; its ranges frozen for the last one), alone
and pruned to 50% meanwhile. With a CNN teacher of the zoo on images, a
small CNN of its family (`cnn-small`, at most an eighth of its
parameters) is distilled too and measured in float, int8 after training,
int8 quantization-aware, and pruned 50% + int8 quantization-aware.
Beside distillation it trains the other cheap ways to a better small
model (`keras_distill.app.alternatives`): the student from scratch with
label smoothing, with input noise and with teacher-free KD, and a
transfer model (the teacher's first layers under a new head, at about
the student's size), frozen and then fine-tuned. For
every model it measures the test error,
the parameters and non-zero weights, the TFLite file's bytes and its
gzip-compressed bytes (what an app bundle ships: zeros compress) and the
single-thread LiteRT latency. It writes `frontier.json`, `frontier.md`
(the table, and which models are on the Pareto front of error against
compressed bytes) and `frontier.png`, and adds the table and the plot
to the run's `report.md`.
"""

import gzip
import json
import os

import keras
import numpy as np

from keras_distill import prune
from keras_distill._utils import write_text
from keras_distill.app import alternatives
from keras_distill.app.report import markdown_table

TEACHER_SPARSITIES = (0.5, 0.75, 0.9)
STUDENT_SPARSITY = 0.5
# The small CNN student of a CNN teacher's family.
SMALL_CNN = "cnn-small"


def pareto_front(points):
    """The labels of the points no other point beats on both axes.

    Args:
        points: `{label: (size, error)}`.

    Returns:
        The labels on the front, from the smallest size up.
    """
    front, best = [], float("inf")
    for label, (size, error) in sorted(points.items(), key=lambda p: p[1]):
        if error < best:
            front.append(label)
            best = error
    return front


def error_rate(model, run):
    """The share of the run's test examples `model` misclassifies, in
    Keras (a folder's streamed from disk)."""
    predicted, labels = run.test_predictions(model)
    return float(np.mean(predicted != labels))


def _fine_tune(
    run, model, sparsity, epochs, teacher=None, trained=None, callbacks=()
):
    """Prunes `model` to `sparsity` while fine-tuning it for `epochs` on
    the run's training data (distilled from `teacher` when given).

    `trained` is the model that trains (by default `model`): a
    quantization-aware twin of `model`, which shares its kernels. With
    `sparsity` None nothing is pruned; `callbacks` are added to `fit`'s."""
    from keras_distill.distiller import Distiller

    trained = model if trained is None else trained
    train = run.train_dataset("teacher" if teacher is None else "student")
    steps = max(1, int(train.cardinality()))
    callbacks = list(callbacks)
    pruner = None
    if sparsity is not None:
        # The sparsity grows over the first half of the fine-tuning; the
        # second half recovers at the final sparsity.
        pruner = prune.Pruner(
            sparsity,
            end_step=max(1, (epochs * steps) // 2),
            frequency=max(1, steps // 4),
            target=model,
        )
        callbacks.append(pruner)
    args = run._compile_args()  # the run's optimizer and learning rate
    trainer = trained
    if teacher is not None:
        trainer = Distiller(
            teacher, trained, student_loss_weight=run.config.resolved().alpha
        )
    trainer.compile(args["optimizer"], args["loss"])
    trainer.fit(
        train, epochs=epochs, verbose=0, shuffle=False, callbacks=callbacks
    )
    return model if pruner is None else prune.strip(model, pruner)


def quantization_aware(run, student, teacher, epochs, sparsity=None):
    """The int8 quantization-aware twin of a copy of `student`, distilled
    from `teacher` for `epochs` (pruned to `sparsity` meanwhile, if
    given), its activation ranges frozen for the last epoch.

    Returns:
        `(twin, its float model)`.
    """
    from keras_distill import quantization

    model = keras.models.clone_model(student)
    model.set_weights(student.get_weights())
    twin = quantization.quantization_aware(model)
    freeze = quantization.FreezeRanges(twin, epoch=max(0, epochs - 1))
    _fine_tune(run, model, sparsity, epochs, teacher, twin, [freeze])
    return twin, model


def small_cnn(run, teacher, log=print):
    """A small CNN of the teacher's family (`SMALL_CNN` from the model
    zoo, at most an eighth of the teacher's parameters), distilled from
    the teacher for the run's epochs; None where the run's inputs are not
    images or the teacher is not a CNN of the zoo."""
    from keras_distill.app import zoo
    from keras_distill.distiller import Distiller

    c = run.config.resolved()
    shape = tuple(run.data.input_shape)
    family = isinstance(c.teacher, str) and c.teacher.startswith(
        ("cnn-", "resnet-")
    )
    if len(shape) != 3 or not family:
        return None
    keras.utils.set_random_seed(c.seed)
    model = zoo.build(SMALL_CNN, shape, run.data.num_classes, seed=c.seed + 2)
    if model.count_params() * 8 > teacher.count_params():
        return None
    log(
        f"[compare] distilling a small CNN ({SMALL_CNN}, "
        f"{model.count_params():,} parameters), {c.epochs} epochs"
    )
    distiller = Distiller(teacher, model, student_loss_weight=c.alpha)
    args = run._compile_args()
    distiller.compile(args["optimizer"], args["loss"])
    distiller.fit(
        run.train_dataset("student"), epochs=c.epochs, verbose=0, shuffle=False
    )
    return model


def measure(name, model, run, folder, int8=False, counted=None):
    """One row: error, parameters, non-zeros, bytes, gzip bytes, latency.

    `counted` is the model whose parameters are counted (by default
    `model`; a quantization-aware twin's float model)."""
    counted = model if counted is None else counted
    from keras_distill import export

    path = os.path.join(folder, f"{name}.tflite")
    report = export.tflite(
        model,
        path,
        quantize="int8" if int8 else None,
        representative_data=run.train_sample(),
        check_data=run.test_arrays(),
    )
    with open(path, "rb") as f:
        compressed = len(gzip.compress(f.read(), compresslevel=9))
    return {
        "model": name,
        "test_error": 1.0 - report.accuracy,
        "keras_test_error": error_rate(model, run),
        "params": int(counted.count_params()),
        "nonzero": prune.nonzero_count(counted),
        "tflite_bytes": int(report.bytes),
        "gzip_bytes": compressed,
        "latency_ms": report.latency_ms,
        # A quantization-aware twin's file against the twin (else None).
        "within_one_step": report.within_one_step,
    }


def compare(run, prune_epochs=4, log=print):
    """Measures the compression frontier of a run; see the module doc.

    Args:
        run: A `keras_distill.app.run.Run` whose teacher, scratch student
            and distilled student are trained.
        prune_epochs: Fine-tuning epochs of each pruned model.
        log: A function that prints a progress line.

    Returns:
        The result dict (also in `frontier.json`).
    """
    folder = run.file("frontier")
    os.makedirs(folder, exist_ok=True)
    # The user's teacher, behind its preprocessing when its inputs differ.
    teacher = run.on_data("teacher", run.load("teacher"))
    student = run.load("student")
    rows = []

    def add(name, model, int8=False, counted=None):
        rows.append(measure(name, model, run, folder, int8, counted))
        row = rows[-1]
        log(
            f"[compare] {name}: error {100 * row['test_error']:.2f}%, "
            f"{row['gzip_bytes']:,} gzip bytes"
        )

    add("teacher", teacher)
    add("teacher int8", teacher, int8=True)
    for sparsity in TEACHER_SPARSITIES:
        pruned = keras.models.clone_model(teacher)
        pruned.set_weights(teacher.get_weights())
        pruned = _fine_tune(run, pruned, sparsity, prune_epochs)
        label = f"teacher pruned {round(100 * sparsity)}%"
        add(label, pruned)
        add(f"{label} int8", pruned, int8=True)
    add("student from scratch", run.load("scratch"))
    _add_alternatives(add, rows, run, teacher, prune_epochs, log)
    add("distilled student", student)
    add("distilled student int8", student, int8=True)
    pruned = keras.models.clone_model(student)
    pruned.set_weights(student.get_weights())
    pruned = _fine_tune(run, pruned, STUDENT_SPARSITY, prune_epochs, teacher)
    add(f"distilled student pruned {round(100 * STUDENT_SPARSITY)}%", pruned)
    twin, model = quantization_aware(run, student, teacher, prune_epochs)
    add("distilled student int8 quantization-aware", twin, True, model)
    twin, model = quantization_aware(
        run, student, teacher, prune_epochs, STUDENT_SPARSITY
    )
    percent = round(100 * STUDENT_SPARSITY)
    label = f"distilled student pruned {percent}% int8 quantization-aware"
    add(label, twin, True, model)
    small = small_cnn(run, teacher, log)
    if small is not None:
        name = "small CNN"
        add(name, small)
        add(f"{name} int8", small, int8=True)
        twin, model = quantization_aware(run, small, teacher, prune_epochs)
        add(f"{name} int8 quantization-aware", twin, True, model)
        twin, model = quantization_aware(
            run, small, teacher, prune_epochs, STUDENT_SPARSITY
        )
        label = f"{name} pruned {percent}% int8 quantization-aware"
        add(label, twin, True, model)
    points = {r["model"]: (r["gzip_bytes"], r["test_error"]) for r in rows}
    result = {
        "rows": rows,
        "front": pareto_front(points),
        "prune_epochs": prune_epochs,
    }
    write(result, run)
    return result


def _add_alternatives(add, rows, run, teacher, prune_epochs, log):
    """The rows of `keras_distill.app.alternatives`: label smoothing,
    input noise, teacher-free KD and the transfer students."""
    smoothing = alternatives.LABEL_SMOOTHING
    add(
        f"student label smoothing {smoothing}",
        alternatives.label_smoothing(run, log),
    )
    noisy = alternatives.input_noise(run, log)
    if noisy is not None:
        add("student input noise", noisy[0])
        rows[-1]["noise_stddev"] = noisy[1]
    add("student teacher-free KD", alternatives.teacher_free(run, log))
    made = alternatives.transfer(run, teacher, prune_epochs, log)
    if made is not None:
        frozen, fine_tuned, layer = made
        add("transfer frozen", frozen)
        rows[-1]["prefix_until"] = layer
        add("transfer fine-tuned", fine_tuned)
        rows[-1]["prefix_until"] = layer


# A row's family (its colour and marker in the plot), by its name's start.
FAMILIES = (
    ("teacher", "teacher", "tab:blue", "o"),
    ("transfer", "transfer", "tab:orange", "D"),
    ("small CNN", "small CNN", "tab:purple", "o"),
    ("distilled", "distilled student", "tab:green", "o"),
    ("student from scratch", "student from scratch", "tab:gray", "o"),
    ("student", "regularized student", "tab:olive", "^"),
)


def family(name):
    """`(family, colour, marker)` of a row's model name; quantization-aware
    rows are drawn as squares in their family's colour."""
    for start, label, color, marker in FAMILIES:
        if name.startswith(start):
            if "quantization-aware" in name:
                marker = "s"
            return label, color, marker
    return "other", "tab:brown", "o"


def markdown(result):
    """The frontier table and which models are on the front."""
    header = [
        "model",
        "test error",
        "params",
        "non-zero",
        "TFLite bytes",
        "gzip bytes",
        "ms",
        "front",
    ]
    front = set(result["front"])
    rows = [
        [
            r["model"],
            f"{100 * r['test_error']:.2f}%",
            f"{r['params']:,}",
            f"{r['nonzero']:,}",
            f"{r['tflite_bytes']:,}",
            f"{r['gzip_bytes']:,}",
            f"{r['latency_ms']:.3f}",
            "yes" if r["model"] in front else "",
        ]
        for r in result["rows"]
    ]
    if result.get("seeds", 1) > 1:
        header[1] = f"test error (mean of {result['seeds']} seeds)"
    lines = ["# Compression frontier", "", markdown_table(header, rows), ""]
    lines.append(
        "On the Pareto front of test error against compressed bytes, from "
        "the smallest file up: " + ", ".join(result["front"]) + "."
    )
    return "\n".join(lines) + "\n"


def _label(axis, text, x, y, placed):
    """Labels a point on the first side (right above, right below, left
    above, left below) where the label overlaps no label placed before."""
    px, py = axis.transData.transform((x, y))
    width, height = 5.2 * len(text), 10
    for dx, dy, align in (
        (5, 4, "left"),
        (5, -13, "left"),
        (-5, 4, "right"),
        (-5, -13, "right"),
    ):
        left = px + dx if align == "left" else px + dx - width
        box = (left, py + dy, left + width, py + dy + height)
        if not any(
            box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3]
            for b in placed
        ):
            break
    placed.append(box)
    axis.annotate(
        text,
        (x, y),
        textcoords="offset points",
        xytext=(dx, dy),
        ha=align,
        fontsize=8,
        # A thin line to its point: in a crowded corner a label may sit
        # nearer another point.
        arrowprops=dict(arrowstyle="-", linewidth=0.4, color="0.6"),
    )


def plot(result, path):
    """`frontier.png`: test error against gzip bytes (log x), labelled,
    with the Pareto front drawn."""
    from keras_distill.app.report import _pyplot
    from keras_distill.app.report import _save

    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(9, 5.5))
    by_name = {r["model"]: r for r in result["rows"]}
    labelled = set()
    for r in result["rows"]:
        label, color, marker = family(r["model"])
        if marker == "s":
            label = f"{label}, int8 quantization-aware"
        axis.scatter(
            r["gzip_bytes"],
            100 * r["test_error"],
            color=color,
            marker=marker,
            label=None if label in labelled else label,
        )
        labelled.add(label)
    axis.set_xscale("log")
    axis.autoscale_view()
    placed = []
    for r in sorted(result["rows"], key=lambda r: r["gzip_bytes"]):
        _label(axis, r["model"], r["gzip_bytes"], 100 * r["test_error"], placed)
    front = [by_name[name] for name in result["front"]]
    axis.plot(
        [r["gzip_bytes"] for r in front],
        [100 * r["test_error"] for r in front],
        color="tab:red",
        linestyle="--",
        label="Pareto front",
    )
    axis.set_xlabel("TFLite file, gzip-compressed (bytes, log scale)")
    axis.set_ylabel("test error (%)")
    axis.set_title("Error against compressed size")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=7)
    _save(fig, path)
    plt.close(fig)


def aggregate(results):
    """The mean of several seeds' frontiers (same models, in order).

    Args:
        results: The dicts `compare` returned, one per seed.

    Returns:
        A result dict of the same form: each row's test error is the mean
        over seeds (with `test_errors`, every seed's), its sizes and
        latency those of the first seed's files; the front is recomputed
        on the means.
    """
    rows = []
    for parts in zip(*[r["rows"] for r in results]):
        row = dict(parts[0])
        row["test_errors"] = [p["test_error"] for p in parts]
        row["test_error"] = float(np.mean(row["test_errors"]))
        rows.append(row)
    points = {r["model"]: (r["gzip_bytes"], r["test_error"]) for r in rows}
    return {
        "rows": rows,
        "front": pareto_front(points),
        "prune_epochs": results[0]["prune_epochs"],
        "seeds": len(results),
    }


def write(result, run):
    """Writes `frontier.json`, `frontier.md` and `frontier.png` in `run`."""
    write_text(run.file("frontier.json"), json.dumps(result, indent=2) + "\n")
    write_text(run.file("frontier.md"), markdown(result))
    plot(result, run.file("frontier.png"))
    run.report()  # report.md gains the frontier
