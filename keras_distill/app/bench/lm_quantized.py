"""`bench lm`'s quantization-aware rows: the `forward` student as it
runs in its dynamic-range int8 file.

Per seed, two rows beside the float `forward` student:

- `forward_int8`: that student's dynamic-range int8 file (post-training
  quantization), scored by running the file on the validation windows;
- `forward_qat_int8`: the same student whose last epoch is distilled
  quantization-aware instead
  (`keras_distill.quantization.quantization_aware(student, "dynamic")`,
  the same loss, batches and optimizer state: only the arithmetic
  differs), exported to a dynamic-range file and scored the same way.
  Its seconds include tracing the twin's step (the float epoch's step
  was traced in the epochs before).

The figures: each file's validation cross-entropy, the share of the gap
between the float student and its post-training file that the
quantization-aware file closes, and the share of validation tokens
whose next-token argmax each file and its Keras model agree on.
"""

import os
import statistics
import tempfile

import numpy as np

from keras_distill._utils import predict
from keras_distill.app.bench.common import next_token_ce


def file_logits(path, x):
    """The next-token logits a `.tflite` file computes for windows `x`."""
    from keras_distill.export._runner import Runner

    return Runner(path).predict(x)


def _exported(model, x, name):
    """`model`'s dynamic-range file's logits on `x`."""
    from keras_distill import export

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, f"{name}.tflite")
        export.tflite(
            model, path, quantize="dynamic", check_data=x[:8], latency_runs=1
        )
        return file_logits(path, x)


def branch(model, last_epoch, setup):
    """The quantization-aware branch, run where the `forward` student is
    about to start its last epoch: that epoch on the student's twin, from
    the same weights and optimizer state, then both put back so that the
    float epoch runs as if this had not happened.

    Args:
        model: The `forward` student's `Distiller`, compiled and trained
            up to its last epoch.
        last_epoch: A function that trains a twin's last epoch with
            `model`'s optimizer and returns its seconds.
        setup: The benchmark's `lm.Setup` (the validation windows).

    Returns:
        A dict of figures.
    """
    from keras_distill import quantization

    student, optimizer = model.student, model.optimizer
    weights = student.get_weights()
    state = [v.numpy() for v in optimizer.variables]
    try:
        twin = quantization.quantization_aware(student, "dynamic")
        seconds = last_epoch(twin)
        x, y = setup.x_val, setup.y_val
        keras_logits = np.asarray(predict(twin, x))
        file = _exported(twin, x, "forward_qat_int8")
    finally:
        student.set_weights(weights)
        for variable, value in zip(optimizer.variables, state):
            variable.assign(value)
    return {
        "forward_qat_ce": next_token_ce(keras_logits, y),
        "forward_qat_int8_ce": next_token_ce(file, y),
        "forward_qat_int8_seconds": seconds,
        "qat_file_agreement": float(
            np.mean(file.argmax(-1) == keras_logits.argmax(-1))
        ),
    }


def post_training(setup, student):
    """The trained float student and its dynamic-range file."""
    x, y = setup.x_val, setup.y_val
    keras_logits = np.asarray(predict(student, x))
    file = _exported(student, x, "forward_int8")
    return {
        "forward_ce": next_token_ce(keras_logits, y),
        "forward_int8_ce": next_token_ce(file, y),
        "ptq_file_agreement": float(
            np.mean(file.argmax(-1) == keras_logits.argmax(-1))
        ),
    }


def finish(figures, float_seconds):
    """Adds the gap closed, the goal and the float epoch's seconds.

    The goal (the quantization-aware file closes at least 80% of the gap
    between the float student and its post-training file) is met when
    that file's cross-entropy is at most the float student's plus 20% of
    the gap; where the post-training file is no worse than the float
    student there is no gap, and the goal asks for no more than the float
    student's cross-entropy.
    """
    plain, ptq = figures["forward_ce"], figures["forward_int8_ce"]
    qat = figures["forward_qat_int8_ce"]
    gap = ptq - plain
    return {
        **figures,
        "forward_int8_seconds": float_seconds,
        "gap": gap,
        "gap_closed": (ptq - qat) / gap if gap > 0 else None,
        "qat_minus_float": qat - plain,
        "goal_met": qat <= plain + 0.2 * max(gap, 0.0),
    }


def line(seed, figures):
    """One progress line."""
    closed = figures["gap_closed"]
    closed = "no gap" if closed is None else f"gap closed {closed:.0%}"
    return (
        f"[lm seed {seed}] int8 files: forward {figures['forward_int8_ce']:.4f}"
        f", quantization-aware {figures['forward_qat_int8_ce']:.4f} nats "
        f"(float {figures['forward_ce']:.4f}; {closed}); file = Keras on "
        f"{figures['qat_file_agreement']:.2%} of tokens"
    )


def summary(per_seed):
    """The seeds' figures as lists, with the goal's means."""
    if not per_seed:
        return {}
    keys = per_seed[0].keys()
    out = {k: [f[k] for f in per_seed] for k in keys}
    gaps = [g for g in out["gap_closed"] if g is not None]
    mean = {
        k: statistics.mean(out[k])
        for k in ("forward_ce", "forward_int8_ce", "forward_qat_int8_ce")
    }
    gap = mean["forward_int8_ce"] - mean["forward_ce"]
    out["mean"] = {
        **mean,
        # The goal: the mean gap the quantization-aware file closes.
        "gap_closed": (
            (mean["forward_int8_ce"] - mean["forward_qat_int8_ce"]) / gap
            if gap > 0
            else None
        ),
        "gap_closed_per_seed_median": (
            statistics.median(gaps) if gaps else None
        ),
        "qat_file_agreement_min": min(out["qat_file_agreement"]),
        "goal_met_seeds": sum(out["goal_met"]),
    }
    return out
