"""The statistics of `keras-distill bench speed`: each variant's figure
from its epoch times, the ratios the goals read, their spread round by
round, and several processes' results combined into one.

`keras_distill.app.bench.speed` measures; this module only counts, on
plain lists of seconds (no TensorFlow).
"""

import statistics

# Ratios of the variants' figures (`pooled_quartiles`), and the most each
# may be.
GOALS = {
    "online/bound": 1.05,
    "online/keras": 0.95,
    "online/keras_io": 1.00,
    "online_feature/online": 1.15,
    "keras_feature/keras": None,
    "cached/student_alone": 1.05,
    "quantization_aware/online": 1.50,
}

def pooled_medians(times):
    """The median of every epoch time of each variant, all rounds
    together."""
    return {
        k: statistics.median([t for unit in rounds for t in unit])
        for k, rounds in times.items()
    }


def pooled_quartiles(times):
    """The first quartile of every epoch time of each variant, all rounds
    together: the figure the ratios read.

    On a shared machine interference only ever adds time, and more often
    to some epochs than to others; the first quartile of many epochs
    stays near the undisturbed cost where the median moves with the share
    of disturbed epochs (two runs' CPU-time ratios agreed within 2.6%
    with it, within 4.2% with the median).
    """
    return {
        k: quartiles([t for unit in rounds for t in unit])[0]
        for k, rounds in times.items()
    }


def ratios(values):
    """The ratios of `GOALS` between per-variant values."""
    out = {}
    for pair in GOALS:
        a, b = pair.split("/")
        out[pair] = values[a] / values[b]
    return out


def quartiles(values):
    """`(first quartile, median, third quartile)` of a list."""
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, median, q3


def round_ratios(times):
    """Each ratio of `GOALS` within each round, summarised over rounds.

    Args:
        times: Seconds by variant: rounds, each a list of epoch times.

    Returns:
        `{ratio: {"median", "q1", "q3", "iqr_share", "rounds"}}`: each
        round's ratio of median epoch times, their median and quartiles
        over rounds, and `iqr_share`, `(q3 - q1) / median`: the ratio's
        spread from round to round.
    """
    per_round = {
        k: [statistics.median(unit) for unit in rounds]
        for k, rounds in times.items()
    }
    out = {}
    for pair in GOALS:
        a, b = pair.split("/")
        values = [x / y for x, y in zip(per_round[a], per_round[b])]
        q1, median, q3 = quartiles(values)
        out[pair] = {
            "median": median,
            "q1": q1,
            "q3": q3,
            "iqr_share": (q3 - q1) / median,
            "rounds": values,
        }
    return out


def combine(results):
    """Several processes' results as one.

    Args:
        results: The dicts `run_one` returned.

    Returns:
        A result of the same form: each variant's figures (medians, first
        quartiles) and each ratio the median over processes, the epochs
        and rounds of all processes together (`round_ratios` over every
        round), the first steps of all, and `process_ratios` /
        `process_ratios_cpu`, every process' own ratios.
    """
    first = results[0]
    out = dict(first)
    out["config"] = dict(
        first["config"],
        processes=len(results),
        rounds_per_process=first["config"]["rounds"],
        rounds=sum(r["config"]["rounds"] for r in results),
    )
    variants = list(first["median_epoch_seconds"])
    for key in (
        "median_epoch_seconds",
        "median_epoch_cpu_seconds",
        "q1_epoch_seconds",
        "q1_epoch_cpu_seconds",
    ):
        out[key] = {
            v: statistics.median(r[key][v] for r in results) for v in variants
        }
    out["min_epoch_seconds"] = {
        v: min(r["min_epoch_seconds"][v] for r in results) for v in variants
    }
    for key in ("epoch_seconds", "epoch_cpu_seconds"):
        out[key] = {
            v: [unit for r in results for unit in r[key][v]] for v in variants
        }
    for key in ("ratios", "ratios_cpu"):
        out[key] = {
            k: statistics.median(r[key][k] for r in results) for k in GOALS
        }
        out[f"process_{key}"] = {k: [r[key][k] for r in results] for k in GOALS}
    out["round_ratios"] = round_ratios(out["epoch_seconds"])
    out["round_ratios_cpu"] = round_ratios(out["epoch_cpu_seconds"])
    out["cache_build_seconds"] = statistics.median(
        r["cache_build_seconds"] for r in results
    )
    steps = {
        k: [t for r in results for t in r["first_step_seconds"][k]]
        for k in first["first_step_seconds"]
    }
    out["first_step_seconds"] = steps
    alone = statistics.median(steps["student_alone"])
    out["first_step_ratios"] = {
        f"{k}/student_alone": statistics.median(steps[k]) / alone
        for k in ("online", "keras")
    }
    return out
