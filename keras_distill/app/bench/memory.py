"""The memory benchmark behind `keras-distill bench memory`.

It measures what a token-level distillation loss costs in memory and time
on its own: the loss and its gradient with respect to the student's
logits, for teacher and student logits of shape `(2, 256, V)` in float32,
in one `tf.function`.

How the memory is measured: each case runs in a fresh Python process.
It makes the two logits tensors, traces the function and runs it once
(TensorFlow's first-run allocations), then resets the process' peak
resident set size (writing 5 to `/proc/self/clear_refs`), reads the
resident size as the base, runs the function once more and reads the
peak (`VmHWM` in `/proc/self/status`). The figure is `(peak - base)`,
in bytes and in logits tensors (`2 · 256 · V · 4` bytes): what the loss'
forward and backward passes add above their two inputs, the gradient they
return included. The child process runs with oneDNN off
(`TF_ENABLE_ONEDNN_OPTS=0`) and a fixed glibc mmap threshold
(`MALLOC_MMAP_THRESHOLD_=131072`): oneDNN's CPU allocator keeps freed
memory in a pool, and glibc keeps freed blocks of up to 32 MiB in its
heap, so the resident size would not show what a step frees and
allocates again. Linux only.

Time is the median of several calls of the same function, in the same
process, after the memory measurement.

Cases: `keras_distill.losses.LogitsDistillation(temperature=2.0)`,
`ReverseKL()` and `GeneralizedJSD(0.5)`, each unchunked
(`chunk_size=None`) and chunked (`chunk_size="auto"`), with
`keras.distillation.LogitsDistillation(temperature=2.0)` and a bare
log-softmax KL (two log-softmaxes, an exponential, a sum) for reference.
"""

import json
import os
import statistics
import subprocess
import sys
import time

VOCABULARIES = (32768, 262144)
QUICK_VOCABULARIES = (16384,)
SHAPE = (2, 256)
QUICK_SHAPE = (2, 64)
LOSSES = ("kd", "reverse_kl", "jsd", "keras", "bare")
# Our losses, measured both ways; the references once.
CHUNKED = ("kd", "reverse_kl", "jsd")


def _status(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError as error:
        raise RuntimeError(
            "The memory benchmark resets the peak resident size through "
            "/proc/self/clear_refs (Linux), which failed here: "
            f"{error}"
        ) from error


def _loss_function(name, chunk_size):
    import keras
    from keras import ops

    from keras_distill import losses

    if name == "kd":
        loss = losses.LogitsDistillation(2.0, chunk_size=chunk_size)
        return loss.compute
    if name == "reverse_kl":
        return losses.ReverseKL(chunk_size=chunk_size).compute
    if name == "jsd":
        return losses.GeneralizedJSD(0.5, chunk_size=chunk_size).compute
    if name == "keras":
        loss = keras.distillation.LogitsDistillation(temperature=2.0)
        return loss.compute_loss

    def bare(teacher, student):
        log_p = ops.log_softmax(teacher, axis=-1)
        log_q = ops.log_softmax(student, axis=-1)
        return ops.mean(ops.sum(ops.exp(log_p) * (log_p - log_q), axis=-1))

    return bare


def measure_one(loss, vocab, chunk_size, shape=SHAPE, repeats=5):
    """Measures one case in this process (see the module docstring).

    Args:
        loss: A name of `LOSSES`.
        vocab: The vocabulary size V.
        chunk_size: The loss' `chunk_size` (our losses only).
        shape: The logits' leading axes.
        repeats: Timed calls after the memory measurement.

    Returns:
        A dict: the case, `extra_peak_bytes`, `extra_peak_tensors`,
        `seconds` (each timed call) and `median_seconds`.
    """
    import tensorflow as tf

    compute = _loss_function(loss, chunk_size)
    full = tuple(shape) + (vocab,)
    teacher = tf.random.stateless_normal(full, (0, 1)) * 3.0
    student = tf.random.stateless_normal(full, (0, 2)) * 3.0

    @tf.function
    def step(teacher, student):
        with tf.GradientTape() as tape:
            tape.watch(student)
            value = compute(teacher, student)
        return value, tape.gradient(value, student)

    value, gradient = step(teacher, student)
    del value, gradient
    _reset_peak()
    base = _status("VmRSS")
    value, gradient = step(teacher, student)
    peak = _status("VmHWM")
    finite = bool(tf.math.is_finite(value)) and bool(
        tf.reduce_all(tf.math.is_finite(gradient))
    )
    del value, gradient
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        value, gradient = step(teacher, student)
        float(value)
        seconds.append(time.perf_counter() - start)
        del value, gradient
    tensor = 4 * vocab
    for axis in shape:
        tensor *= axis
    return {
        "loss": loss,
        "vocab": vocab,
        "chunk_size": chunk_size,
        "shape": list(full),
        "logits_tensor_bytes": tensor,
        "extra_peak_bytes": peak - base,
        "extra_peak_tensors": (peak - base) / tensor,
        "finite": finite,
        "seconds": seconds,
        "median_seconds": statistics.median(seconds),
    }


def cases(quick=False):
    """The `(loss, vocab, chunk_size)` cases a run measures (`quick`:
    forward KD unchunked and in chunks of 4 positions)."""
    if quick:
        return [("kd", QUICK_VOCABULARIES[0], c) for c in (None, 4)]
    out = []
    for vocab in VOCABULARIES:
        for loss in LOSSES:
            for chunk_size in (None, "auto") if loss in CHUNKED else (None,):
                out.append((loss, vocab, chunk_size))
    return out


def run(quick=False, repeats=5, log=print):
    """Runs every case, each in a fresh process.

    Args:
        quick: Forward KD only, on logits `(2, 64, 16384)`, unchunked
            and in chunks of 4 positions, 2 repeats: for the tests.
        repeats: Timed calls per case.
        log: A function that prints a progress line.

    Returns:
        The result dict: versions, the method, every case, and for each of
        our losses and vocabularies the chunked form's memory and time
        against the unchunked form's.
    """
    from keras_distill.app.environment import versions

    shape = QUICK_SHAPE if quick else SHAPE
    repeats = 2 if quick else repeats
    results = []
    for loss, vocab, chunk_size in cases(quick):
        case = dict(
            loss=loss,
            vocab=vocab,
            chunk_size=chunk_size,
            shape=list(shape),
            repeats=repeats,
        )
        result = _in_fresh_process(case)
        log(
            f"[memory] {loss} V={vocab} chunk_size={chunk_size}: "
            f"{result['extra_peak_tensors']:.2f} logits tensors, "
            f"{result['median_seconds']:.3f} s"
        )
        results.append(result)
    return {
        "versions": versions(),
        "method": (
            "peak resident set size above the two logits tensors while "
            "the loss and its gradient run once in a tf.function, in a "
            "fresh process per case (VmHWM after clearing it, minus VmRSS "
            "before the call); time: median of repeated calls"
        ),
        "quick": quick,
        "cases": results,
        "chunked_against_unchunked": compare(results),
    }


def compare(results):
    """For each of our losses and vocabularies: the chunked form's extra
    memory (in logits tensors) and time against the unchunked form's."""
    by_case = {(r["loss"], r["vocab"], r["chunk_size"]): r for r in results}
    out = {}
    for (loss, vocab, chunk_size), chunked in by_case.items():
        plain = by_case.get((loss, vocab, None))
        if chunk_size is None or plain is None:
            continue
        out[f"{loss}@{vocab}"] = {
            "unchunked_tensors": plain["extra_peak_tensors"],
            "chunked_tensors": chunked["extra_peak_tensors"],
            "time_ratio": chunked["median_seconds"] / plain["median_seconds"],
        }
    return out


def _in_fresh_process(case):
    # oneDNN's CPU allocator keeps freed memory in a pool, which hides
    # the peak from the resident size; TensorFlow's default one frees it.
    # A fixed mmap threshold makes glibc map every large block and unmap
    # it when freed (its dynamic threshold would keep freed blocks of up
    # to 32 MiB resident, reused unseen).
    environment = dict(
        os.environ,
        TF_CPP_MIN_LOG_LEVEL="3",
        TF_ENABLE_ONEDNN_OPTS="0",
        MALLOC_MMAP_THRESHOLD_="131072",
    )
    process = subprocess.run(
        [sys.executable, "-m", __name__, json.dumps(case)],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )
    if process.returncode != 0:
        raise RuntimeError(
            f"The memory case {case} failed:\n{process.stderr[-3000:]}"
        )
    return json.loads(process.stdout.strip().splitlines()[-1])


def table(result):
    """A plain-text summary of a memory benchmark result."""
    from keras_distill.app.report import format_table

    rows = [
        [
            r["loss"],
            str(r["vocab"]),
            str(r["chunk_size"]),
            f"{r['extra_peak_tensors']:.2f}",
            f"{r['extra_peak_bytes'] / 2**20:.0f}",
            f"{r['median_seconds']:.3f}",
        ]
        for r in result["cases"]
    ]
    return format_table(
        [
            "loss",
            "V",
            "chunk_size",
            "extra peak (logits tensors)",
            "extra peak (MiB)",
            "median s/step",
        ],
        rows,
    )


if __name__ == "__main__":
    _case = json.loads(sys.argv[1])
    print(
        json.dumps(
            measure_one(
                _case["loss"],
                _case["vocab"],
                _case["chunk_size"],
                tuple(_case["shape"]),
                _case["repeats"],
            )
        )
    )
