"""Run reports: the comparison table, `report.md` and the PNG plots."""

import os

from keras_distill._utils import atomic_path
from keras_distill._utils import write_text

ROWS = (
    ("teacher", "teacher"),
    ("scratch", "student from scratch"),
    ("student", "distilled student"),
)


def _kb(value):
    return "-" if value is None else f"{value / 1024:,.1f} KB"


def _pct(value):
    return "-" if value is None else f"{100 * value:.2f}%"


def table_rows(metrics):
    """The comparison table as a header and rows of strings.

    Args:
        metrics: A run's `metrics.json` dict.

    Returns:
        `(header, rows)`.
    """
    tflite = metrics.get("tflite", {})
    header = [
        "model",
        "accuracy",
        "errors",
        "params",
        ".keras",
        "tflite fp32",
        "tflite int8",
        "int8 accuracy",
        "int8 ms",
    ]
    rows = []
    for key, label in ROWS:
        entry = metrics.get(key)
        if not entry or "accuracy" not in entry:
            continue
        fp32 = tflite.get(f"{key}_float32", {})
        int8 = tflite.get(f"{key}_int8", {})
        errors = f"{entry['errors']}/{entry['test_examples']}"
        ms = int8.get("latency_ms")
        rows.append(
            [
                label,
                _pct(entry["accuracy"]),
                errors,
                f"{entry['params']:,}",
                _kb(entry.get("keras_bytes")),
                _kb(fp32.get("bytes")),
                _kb(int8.get("bytes")),
                _pct(int8.get("accuracy")),
                "-" if ms is None else f"{ms:.3f}",
            ]
        )
    return header, rows


def format_table(header, rows):
    """A plain-text table with aligned columns."""
    widths = [
        max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append(
            "  ".join(
                str(c).ljust(w) if i == 0 else str(c).rjust(w)
                for i, (c, w) in enumerate(zip(row, widths))
            )
        )
    return "\n".join(lines)


def markdown_table(header, rows):
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join(" --- " for _ in header) + "|")
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def summary(metrics):
    """One sentence on what distillation bought, or None."""
    scratch = metrics.get("scratch", {}).get("errors")
    student = metrics.get("student", {}).get("errors")
    if scratch is None or student is None:
        return None
    if scratch == 0:
        return "The student from scratch already makes no test errors."
    ratio = student / scratch
    return (
        f"Distillation: {student} test errors against {scratch} for the same "
        f"student trained from scratch (ratio {ratio:.2f})."
    )


def robustness_rows(metrics):
    """Header and rows of the robustness table (accuracy per condition).

    Args:
        metrics: The run's metrics dict.

    Returns:
        `(header, rows)`, or `(None, [])` when no model was evaluated.
    """
    from keras_distill.app.robustness import CONDITIONS

    names = [
        n
        for n in ("teacher", "scratch", "student")
        if metrics.get(n, {}).get("robustness")
    ]
    if not names:
        return None, []
    labels = {
        "teacher": "teacher",
        "scratch": "student from scratch",
        "student": "distilled student",
    }
    header = ["test set"] + [labels[n] for n in names]
    rows = []
    for condition in CONDITIONS:
        values = [metrics[n]["robustness"].get(condition) for n in names]
        if all(v is None for v in values):
            continue
        rows.append(
            [condition]
            + ["-" if v is None else f"{100 * v:.1f}%" for v in values]
        )
    return header, rows


def write(run):
    """Writes the run's `report.md`, `curves.png` and `size_accuracy.png`.

    Args:
        run: A `keras_distill.app.run.Run`.

    Returns:
        The plain-text comparison table (with the summary line).
    """
    metrics = run.metrics()
    header, rows = table_rows(metrics)
    text = format_table(header, rows)
    line = summary(metrics)
    plots = []
    if plot_curves(metrics, run.file("curves.png")):
        plots.append("curves.png")
    if plot_size_accuracy(metrics, run.file("size_accuracy.png")):
        plots.append("size_accuracy.png")
    config = metrics.get("config", run.config.resolved().to_dict())
    augmentation = {
        role: run.augmentation(role) for role in ("teacher", "student")
    }
    alpha = "" if config["alpha"] is None else f"alpha = {config['alpha']}, "
    recipe = config.get("recipe", "kd")
    md = [
        f"# Distillation run `{os.path.basename(os.path.abspath(run.path))}`",
        "",
        f"Dataset `{config['dataset']}`, teacher `{config['teacher']}`, "
        f"student `{config['student']}`, recipe `{recipe}`, "
        f"T = {config['temperature']}, {alpha}{config['epochs']} epochs.",
        "",
        f"Augmentation: teacher `{augmentation['teacher']}`, students "
        f"`{augmentation['student']}` (unset: 2-pixel shifts for images of "
        "at least 16×16 pixels, none for smaller inputs).",
        "",
        markdown_table(header, rows),
        "",
    ]
    if line:
        md += [line, ""]
    r_header, r_rows = robustness_rows(metrics)
    if r_rows:
        md += [
            "## Robustness",
            "",
            "Test accuracy on shifted copies of the test set (see "
            "`keras_distill.app.robustness`):",
            "",
            markdown_table(r_header, r_rows),
            "",
        ]
    for plot in plots:
        md += [f"![{plot}]({plot})", ""]
    frontier = run.file("frontier.md")
    if os.path.exists(frontier):  # written by `keras-distill compare`
        with open(frontier, encoding="utf-8") as f:
            md += [
                "#" + f.read().strip(),
                "",
                "![frontier.png](frontier.png)",
                "",
            ]
    versions = metrics.get("versions")
    if versions:
        md.append(
            "Versions: "
            + ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))
            + "."
        )
    write_text(run.file("report.md"), "\n".join(md) + "\n")
    return text + ("\n\n" + line if line else "")


def _pyplot():
    from keras_distill._utils import optional_import

    matplotlib = optional_import("matplotlib", "app", "The report's plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")


def _epoch_axis(axis, epochs):
    """Whole epochs on the x axis, readable from a single epoch on."""
    from matplotlib.ticker import MaxNLocator

    axis.set_xlim(0.5, max(epochs, 1) + 0.5)
    axis.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def plot_curves(metrics, path):
    """Training curves: losses and validation accuracy per epoch.

    Returns:
        True if a plot was written (there were histories to draw).
    """
    student = metrics.get("student", {}).get("history")
    scratch = metrics.get("scratch", {}).get("history")
    if not student and not scratch:
        return False
    plt = _pyplot()
    longest = max(
        len(history.get("loss", []))
        for history in (student, scratch)
        if history
    )
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    if student:
        epochs = range(1, len(student["loss"]) + 1)
        # A distiller logs its two terms; mutual learning each model's loss.
        keys = [
            k for k in ("student_loss", "distillation_loss") if k in student
        ] or [
            k
            for k in student
            if k.endswith("_loss") and not k.startswith("val_")
        ]
        for key, style in zip(keys or ["loss"], ("-", "--", "-.", ":")):
            left.plot(
                epochs,
                student[key],
                style,
                marker="o",
                markersize=3,
                label=f"distilled: {key}",
            )
    if scratch:
        epochs = range(1, len(scratch["loss"]) + 1)
        left.plot(
            epochs,
            scratch["loss"],
            ":",
            marker="s",
            markersize=3,
            label="scratch: loss",
        )
    left.set_yscale("log")
    from matplotlib.ticker import FuncFormatter
    from matplotlib.ticker import LogFormatter

    # Plain numbers; minor ticks labelled only over a short span (a few
    # epochs), where the decades alone would leave the axis bare.
    left.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    left.yaxis.set_minor_formatter(
        LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.5))
    )
    left.set_xlabel("epoch")
    _epoch_axis(left, longest)
    left.set_ylabel("training loss (log scale)")
    left.set_title("Training losses")
    if left.get_legend_handles_labels()[0]:
        left.legend()
    for name, history in (("distilled", student), ("scratch", scratch)):
        history = history or {}
        if "val_accuracy" in history:
            keys = ["val_accuracy"]
        else:  # mutual learning: one accuracy per model
            keys = [
                k
                for k in history
                if k.startswith("val_") and k.endswith("_accuracy")
            ]
        for key in keys:
            epochs = range(1, len(history[key]) + 1)
            label = name if key == "val_accuracy" else f"{name}: {key[4:]}"
            right.plot(
                epochs, history[key], marker="o", markersize=3, label=label
            )
    teacher = metrics.get("teacher", {})
    if "accuracy" in teacher:
        right.axhline(
            teacher["accuracy"], color="gray", ls="--", label="teacher (test)"
        )
    right.set_xlabel("epoch")
    _epoch_axis(right, longest)
    right.set_ylabel("validation accuracy")
    right.set_title("Validation accuracy")
    if right.get_legend_handles_labels()[0]:
        right.legend()
    _save(fig, path)
    plt.close(fig)
    return True


def plot_size_accuracy(metrics, path):
    """Test accuracy against TFLite file size, every model in the same
    format (the run exports each trained model in float32, and the
    distilled student in every requested variant); each point is labelled
    with its model and variant.

    Returns:
        True if a plot was written.
    """
    points = []
    tflite = metrics.get("tflite", {})
    for key, label in ROWS:
        for name, entry in tflite.items():
            if not name.startswith(f"{key}_"):
                continue
            if entry.get("accuracy") is None:
                continue
            mode = name[len(key) + 1 :]
            points.append(
                (entry["bytes"], entry["accuracy"], f"{label}, {mode}")
            )
    if not points:
        return False
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter

    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = "os^Dvp*h"
    for i, (size, accuracy, label) in enumerate(points):
        ax.scatter(
            size / 1024,
            100 * accuracy,
            marker=markers[i % 8],
            s=60,
            label=label,
        )
    ax.set_xscale("log")
    from matplotlib.ticker import LogLocator

    kilobytes = FuncFormatter(lambda v, _: f"{v:,.0f}")
    ax.xaxis.set_major_formatter(kilobytes)
    ax.xaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
    ax.xaxis.set_minor_formatter(kilobytes)
    ax.set_xlabel("TFLite file size (KB, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Test accuracy against TFLite file size")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)
    return True
