import inspect
import json
import re

import numpy as np
import pytest

from keras_distill import recipes
from keras_distill.app import cli
from keras_distill.app.bench import accuracy as accuracy_bench
from keras_distill.app.bench import common
from keras_distill.app.bench import speed as speed_bench
from keras_distill.app.bench import speed_stats
from keras_distill.app.config import RECIPE_DEFAULTS


def _record_labels(monkeypatch):
    """Makes `common.fit` record the label batches each training reads
    (a list per training) and the models it trains (`read.models`)."""
    import tensorflow as tf

    class Reads(list):
        pass

    read = Reads()
    read.models = []
    real_fit = common.fit

    def recording_fit(model, train, epochs, resumable):
        labels = []
        read.append(labels)
        read.models.append(model)

        def record(y):
            labels.append(y.numpy())
            return y

        def spy(*batch):
            y = tf.py_function(record, [batch[-1]], batch[-1].dtype)
            y.set_shape(batch[-1].shape)
            return (*batch[:-1], y)

        real_fit(model, train.map(spy), epochs, resumable)

    monkeypatch.setattr(common, "fit", recording_fit)
    return read


def _assert_same_batches(read, trainings, steps):
    """Each training's epoch k read pass k of the seed's pipelines,
    whatever was trained before it: equal batches for every model."""
    assert len(read) == trainings
    for labels in read[1:]:
        np.testing.assert_array_equal(
            np.concatenate(labels[:steps]), np.concatenate(read[0])
        )


def test_bench_accuracy_writes_json(tmp_path, capsys, monkeypatch):
    read = _record_labels(monkeypatch)
    output = tmp_path / "accuracy.json"
    status = cli.main(
        [
            "bench",
            "accuracy",
            "--protocol",
            "hinton",
            "--seeds",
            "0",
            "--epochs",
            "1",
            "--dataset",
            "digits",
            "--variants",
            "kd",
            "kd_shift",
            "keras",
            "dkd",
            "kd_hint",
            "--output",
            str(output),
        ]
    )
    assert status == 0
    result = json.loads(output.read_text())
    hinton = result["protocols"]["hinton"]
    assert hinton["seeds"] == [0]
    keys = ("teacher", "scratch", "kd", "kd_shift", "keras", "dkd")
    for key in keys + ("kd_hint",):
        (errors,) = hinton["errors"][key]
        assert 0 <= errors <= hinton["test_examples"]
        assert hinton["mean_error"][key] == errors / hinton["test_examples"]
    assert set(hinton["ratios"]) == {
        "kd/scratch",
        "kd_shift/scratch",
        "keras/scratch",
        "dkd/scratch",
        "kd_hint/scratch",
        "kd/keras",
        "dkd/kd",
    }
    assert result["versions"]["tensorflow"] and result["versions"]["cpu"]
    out = capsys.readouterr().out
    assert "KD+shift" in out and "JSON written to" in out
    assert "DKD" in out and "KD+hint" in out
    # teacher, scratch and the five variants (kd from the cache)
    _assert_same_batches(read, 7, steps=len(read[0]))


def test_cpu_model_names_the_cpu_and_its_vector_instructions(tmp_path):
    from keras_distill.app.environment import cpu_model

    info = tmp_path / "cpuinfo"
    processor = (
        "processor\t: {}\ncpu family\t: 6\nmodel\t\t: 143\n"
        "model name\t: Intel(R) Xeon(R) Processor\n"
        "flags\t\t: fpu sse2 avx2 avx512f amx_tile\n"
    )
    info.write_text(processor.format(0) + "\n" + processor.format(1))
    assert cpu_model(str(info)) == (
        "Intel(R) Xeon(R) Processor (family 6, model 143; "
        "avx2 avx512f amx_tile)"
    )
    info.write_text("processor\t: 0\nmodel name\t: Old\nflags\t: sse2\n")
    assert cpu_model(str(info)) == "Old (family ?, model ?; no avx2)"
    assert isinstance(cpu_model(str(tmp_path / "absent")), str)


def test_accuracy_table_formats_results():
    result = {
        "protocols": {
            "hinton": {
                "seeds": [0, 1],
                "mean_error": {
                    "teacher": 0.02,
                    "scratch": 0.06,
                    "kd": 0.035,
                    "kd_shift": 0.021,
                    "keras": 0.04,
                },
                "ratios": {"kd/scratch": 0.58},
            }
        }
    }
    text = accuracy_bench.table(result)
    assert "6.00%" in text and "3.50%" in text and "kd/scratch 0.58" in text


def _check_speed_result(result, processes):
    """Every field of a quick `bench speed` result, recomputed from its
    raw epoch times (3 rounds of one epoch a process)."""
    assert result["config"]["processes"] == processes
    assert set(result["median_epoch_seconds"]) == set(speed_bench.VARIANTS)
    walls = result["epoch_seconds"]
    for rounds in walls.values():
        assert len(rounds) == 3 * processes
        assert all(len(unit) == 1 and unit[0] > 0 for unit in rounds)
    assert set(result["ratios"]) == set(speed_stats.GOALS)
    assert set(result["ratios_cpu"]) == set(result["ratios"])
    assert set(result["median_epoch_cpu_seconds"]) == set(speed_bench.VARIANTS)

    def q1(units):
        return np.percentile(np.ravel(units), 25)

    # A process' figure: the first quartile of its epochs; its ratio, the
    # ratio of two figures; the run's, the median over processes.
    cached, alone = walls["cached"], walls["student_alone"]
    parts = [slice(3 * i, 3 * i + 3) for i in range(processes)]
    per_process = [q1(cached[p]) / q1(alone[p]) for p in parts]
    np.testing.assert_allclose(
        result["process_ratios"]["cached/student_alone"], per_process
    )
    assert result["ratios"]["cached/student_alone"] == pytest.approx(
        np.median(per_process)
    )
    assert result["q1_epoch_seconds"]["cached"] == pytest.approx(
        np.median([q1(cached[p]) for p in parts])
    )
    cpu = result["process_ratios_cpu"]["online/keras"]
    assert result["ratios_cpu"]["online/keras"] == pytest.approx(np.median(cpu))
    assert result["goals_read_from"] == "ratios_cpu"
    assert result["median_epoch_seconds"]["cached"] == pytest.approx(
        np.median([np.median(cached[p]) for p in parts])
    )
    # Round by round: each round's own ratio, every process' rounds.
    summary = result["round_ratios"]["cached/student_alone"]
    per_round = [np.median(a) / np.median(b) for a, b in zip(cached, alone)]
    np.testing.assert_allclose(summary["rounds"], per_round)
    assert summary["q1"] <= summary["median"] <= summary["q3"]
    assert summary["median"] == pytest.approx(np.median(per_round))
    first = result["first_step_seconds"]
    assert set(first) == {"student_alone", "online", "keras"}
    assert all(len(v) == processes and min(v) > 0 for v in first.values())
    online_first = np.median(first["online"])
    assert result["first_step_ratios"]["online/student_alone"] == (
        pytest.approx(online_first / np.median(first["student_alone"]))
    )
    assert set(result["config"]["epochs_per_unit"]) == set(speed_bench.VARIANTS)
    assert result["cache_build_seconds"] > 0
    assert (
        result["config"]["teacher_params"] > result["config"]["student_params"]
    )


def test_bench_speed_quick_writes_every_field(tmp_path, capsys):
    output = tmp_path / "speed.json"
    args = ["bench", "speed", "--preset", "mlp", "--quick"]
    args += ["--processes", "1", "--threads", "0"]  # TensorFlow's own here
    status = cli.main(args + ["--output", str(output)])
    assert status == 0
    result = json.loads(output.read_text())
    _check_speed_result(result, processes=1)
    assert result["config"]["threads"] == 0
    assert "bound: one tf.function step" in capsys.readouterr().out
    # Three processes combined: here the same epochs, slowed down by 10%
    # and 20% in the second and third, so every ratio stays and every
    # figure is the second's.
    one = {
        k: v
        for k, v in result.items()
        if k not in ("process_ratios", "process_ratios_cpu")
    }
    one["config"] = dict(result["config"], rounds=3)

    def slowed(factor):
        out = json.loads(json.dumps(one))
        for key in (
            "median_epoch_seconds",
            "median_epoch_cpu_seconds",
            "q1_epoch_seconds",
            "q1_epoch_cpu_seconds",
            "min_epoch_seconds",
        ):
            out[key] = {k: v * factor for k, v in out[key].items()}
        for key in ("epoch_seconds", "epoch_cpu_seconds"):
            out[key] = {
                k: [[t * factor for t in unit] for unit in rounds]
                for k, rounds in out[key].items()
            }
        return out

    combined = speed_stats.combine([one, slowed(1.1), slowed(1.2)])
    _check_speed_result(combined, processes=3)
    for k, v in result["q1_epoch_seconds"].items():
        assert combined["q1_epoch_seconds"][k] == pytest.approx(1.1 * v)
    for k, v in result["ratios_cpu"].items():
        assert combined["ratios_cpu"][k] == pytest.approx(v)
    with pytest.raises(ValueError, match="processes"):
        speed_bench.run(processes=0)


@pytest.mark.slow
def test_bench_speed_runs_its_processes_apart(tmp_path, capsys):
    output = tmp_path / "speed.json"
    args = ["bench", "speed", "--preset", "mlp", "--quick"]
    status = cli.main(args + ["--processes", "2", "--output", str(output)])
    assert status == 0
    result = json.loads(output.read_text())
    _check_speed_result(result, processes=2)
    assert result["config"]["threads"] == 1  # the default, in fresh processes
    assert "process 2/2" in capsys.readouterr().out


def test_bench_speed_variants_take_turns_epoch_by_epoch():
    # Three stand-in variants recording their calls: after two epochs each
    # (warm-up, sizing), one epoch a turn, every other round backwards.
    calls = []

    def variant(name):
        def epochs(n=1):
            calls.extend([name] * n)
            return [(0.01, 0.01)] * n

        return epochs

    epochs = {k: variant(k) for k in "abc"}
    walls, cpu, counts = speed_bench.time_rounds(
        epochs, rounds=3, log=lambda line: None, prefix="t"
    )
    assert counts == {"a": 1, "b": 1, "c": 1}
    assert calls[6:] == list("abccbaabc")
    assert walls["a"] == [[0.01]] * 3 and cpu["c"] == [[0.01]] * 3


def test_bench_speed_threads_need_a_fresh_process():
    import tensorflow as tf

    tf.constant(1.0) + 1.0  # TensorFlow's thread pools exist from here
    current = tf.config.threading.get_intra_op_parallelism_threads()
    with pytest.raises(RuntimeError, match="needs a fresh process"):
        speed_bench._set_threads(current + 3)
    with pytest.raises(ValueError, match="threads"):
        speed_bench.run(threads=-1)


def _bench_recipes(output, *flags):
    """`keras-distill bench recipes` on a tiny run; returns its JSON."""
    args = ["bench", "recipes", "--seeds", "0", "--epochs", "1"]
    args += ["--dataset", "digits", "--output", str(output), *flags]
    assert cli.main(args) == 0
    return json.loads(output.read_text())


def test_bench_recipes_writes_json(tmp_path, capsys, monkeypatch):
    from keras_distill.app.bench import recipes as bench_recipes

    read = _record_labels(monkeypatch)

    result = _bench_recipes(tmp_path / "recipes.json")
    assert set(result["errors"]) == set(bench_recipes.KEYS)
    n = result["test_examples"]
    for key, (errors,) in result["errors"].items():
        assert 0 <= errors <= n
        assert result["mean_error"][key] == errors / n
    assert result["ratios"]["born_again_2/born_again_1"] == (
        result["errors"]["born_again_2"][0]
        / result["errors"]["born_again_1"][0]
    )
    assert "function_matching/teacher" in capsys.readouterr().out
    # Function matching is "patient": a longer schedule than the others.
    config = result["config"]
    assert config["function_matching_epochs"] == 3 * config["epochs"] == 3
    assert config["function_matching_mixup"] == bench_recipes.FM_MIXUP
    assert (
        config["function_matching_temperature"] == bench_recipes.FM_TEMPERATURE
    )
    # Its learning rate decays to zero over its whole training; KD's stays.
    fm, kd = read.models[3], read.models[2]
    assert float(fm.temperature) == bench_recipes.FM_TEMPERATURE
    assert float(kd.temperature) == bench_recipes.TEMPERATURE
    assert int(fm.optimizer.iterations) == len(read[3])
    assert float(fm.optimizer.learning_rate) == pytest.approx(0.0, abs=1e-9)
    assert float(kd.optimizer.learning_rate) == pytest.approx(1e-3)
    # Born-again generations train as `born_again` and the CLI's recipe
    # do by default.
    defaults = inspect.signature(recipes.born_again).parameters
    generation = inspect.signature(recipes.generation).parameters
    for name in ("temperature", "alpha"):
        assert generation[name].default == defaults[name].default
    born_again = RECIPE_DEFAULTS["born-again"]
    assert born_again == dict(
        temperature=defaults["temperature"].default,
        alpha=defaults["alpha"].default,
    )
    for generation in read.models[4:6]:
        assert generation.student_loss_weight == born_again["alpha"]
        assert float(generation.temperature) == born_again["temperature"]
    assert kd.student_loss_weight == pytest.approx(bench_recipes.ALPHA)
    assert config["born_again_temperature"] == born_again["temperature"]
    assert config["born_again_alpha"] == born_again["alpha"]
    # teacher, scratch, kd, function matching (3 epochs), born-again 1
    # and 2, large model from scratch, reverse KD, mutual learning
    steps = len(read[0])
    assert len(read[3]) == 3 * steps
    _assert_same_batches(read, 9, steps)
    # A selection trains what it names and what that is trained from, on
    # the same batches: the errors of the full run, and only those rows.
    part = _bench_recipes(
        tmp_path / "part.json", "--only", "function_matching", "born_again_2"
    )
    trained = ["teacher", "scratch", "function_matching"]
    trained += ["born_again_1", "born_again_2"]
    assert set(part["errors"]) == set(trained)
    for key in trained:
        assert part["errors"][key] == result["errors"][key], key
    assert set(part["ratios"]) == {
        "born_again_2/born_again_1",
        "born_again_1/scratch",
        "function_matching/teacher",
        "function_matching/scratch",
    }
    assert "mutual" not in bench_recipes.table(part)


def test_bench_recipessteps_per_epoch():
    import tensorflow as tf

    from keras_distill.app.bench.recipes import steps_per_epoch

    ten = tf.data.Dataset.range(10)
    assert steps_per_epoch(ten.batch(3)) == 4
    # Unknown cardinality (a filter): the batches are counted.
    odd = ten.filter(lambda x: x % 2 == 1).batch(2)
    assert steps_per_epoch(odd) == 3


def test_bench_recipes_selection():
    from keras_distill.app.bench import recipes as bench_recipes

    assert bench_recipes.selection() == bench_recipes.KEYS
    assert bench_recipes.selection(["mutual_b"]) == ("mutual_a", "mutual_b")
    assert bench_recipes.selection(["born_again_ensemble", "kd"]) == (
        "teacher",
        "scratch",
        "kd",
        "born_again_1",
        "born_again_2",
        "born_again_ensemble",
    )
    with pytest.raises(ValueError, match=re.escape("only=['teacher', 'x']")):
        bench_recipes.selection(["teacher", "x"])
    with pytest.raises(ValueError, match="Expected a list of keys"):
        bench_recipes.selection("kd")


def test_bench_accuracy_keeps_the_seeds_it_finished(tmp_path):
    output = tmp_path / "accuracy.json"

    class Cut(Exception):
        pass

    def log(line):
        if line.startswith("[hinton seed 1]"):
            raise Cut(line)

    with pytest.raises(Cut):
        accuracy_bench.run(
            protocols=["hinton"],
            variants=["kd"],
            seeds=[0, 1],
            epochs=1,
            dataset="digits",
            output=str(output),
            log=log,
        )
    hinton = json.loads(output.read_text())["protocols"]["hinton"]
    assert hinton["seeds"] == [0]
    assert [len(v) for v in hinton["errors"].values()] == [1, 1, 1]


def test_bench_lm_quick_writes_every_row(tmp_path, capsys):
    pytest.importorskip("keras_hub", reason="the LM benchmark's tokenizer")
    from keras_distill.app.bench import lm

    output = tmp_path / "lm.json"
    assert (
        cli.main(
            ["bench", "lm", "--quick", "--seeds", "0", "--output", str(output)]
        )
        == 0
    )
    result = json.loads(output.read_text())
    rows = {"teacher", "scratch", "forward", "jsd", "on_policy_0.5"}
    rows |= {f"top4_{form}" for form in lm.FORMS}
    files = {"forward_int8", "forward_qat_int8"}
    assert set(result["validation_ce"]) == rows | files
    assert result["config"]["corpus"] == "docs"
    # Every student's continuations, scored by the teacher (nats).
    assert set(result["sampled_nll"]) == rows - {"teacher"}
    # The int8 files, run on the validation windows.
    qat = result["quantization_aware"]
    forward = result["validation_ce"]["forward"]
    assert qat["forward_ce"] == pytest.approx(forward)
    assert min(qat["qat_file_agreement"]) >= 0.999
    (ptq, qat_file, plain) = (
        qat["forward_int8_ce"][0],
        qat["forward_qat_int8_ce"][0],
        qat["forward_ce"][0],
    )
    if ptq > plain:
        closed = (ptq - qat_file) / (ptq - plain)
        assert qat["gap_closed"][0] == pytest.approx(closed)
    goal = qat_file <= plain + 0.2 * max(ptq - plain, 0.0)
    assert qat["goal_met"] == [goal]
    for key, (nll,) in result["sampled_nll"].items():
        assert 0 < nll < 3 * np.log(result["config"]["vocabulary"]), key
    assert result["ratios"]["on_policy_0.5/jsd sampled NLL"] == pytest.approx(
        result["mean_sampled_nll"]["on_policy_0.5"]
        / result["mean_sampled_nll"]["jsd"]
    )
    for key, (ce,) in result["validation_ce"].items():
        assert 0 < ce < np.log(result["config"]["vocabulary"]) + 1, key
        np.testing.assert_allclose(result["perplexity"][key][0], np.exp(ce))
    per_token = result["cache_bytes_per_token"]
    assert per_token["top4"] == 4 * 6 + 8  # float16 + int32, two floats
    assert per_token["full"] == 4 * result["config"]["vocabulary"]
    seconds = result["seconds_per_epoch"]
    assert result["ratios"]["top4_rest/top4_renormalized s/epoch"] == (
        pytest.approx(seconds["top4_rest"][0] / seconds["top4_renormalized"][0])
    )
    assert result["ratios"]["forward/scratch"] == pytest.approx(
        result["mean_ce"]["forward"] / result["mean_ce"]["scratch"]
    )
    for mode in ("float32", "dynamic"):
        figures = result["tflite"][mode]
        assert figures["bytes"] > 0 and figures["ms_per_token"] > 0
        assert 0.9 <= figures["next_token_agreement"] <= 1.0
    assert (
        result["tflite"]["dynamic"]["bytes"]
        < result["tflite"]["float32"]["bytes"]
    )
    assert "next-token agreement" in capsys.readouterr().out


def test_lm_validation_cross_entropy_is_the_mean_per_token():
    from keras_distill.app.bench import lm

    model = lm.decoder_lm(11, 5, dim=8, layers=1, heads=2, seed=0, name="m")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 11, (4, 5)).astype("int32")
    y = rng.integers(0, 11, (4, 5)).astype("int32")
    logits = np.asarray(model(x), np.float64)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -np.take_along_axis(log_p, y[..., None], -1).mean()
    np.testing.assert_allclose(
        lm.validation_ce(model, x, y), expected, rtol=1e-6
    )
    # Causal: a later token never changes an earlier position's logits.
    changed = x.copy()
    changed[:, -1] = (changed[:, -1] + 1) % 11
    np.testing.assert_allclose(
        np.asarray(model(changed))[:, :-1], logits[:, :-1], atol=1e-5
    )


def test_bench_memory_quick_measures_the_chunked_loss(tmp_path, capsys):
    from keras_distill.app.bench import memory as memory_bench

    output = tmp_path / "memory.json"
    args = ["bench", "memory", "--quick", "--output", str(output)]
    assert cli.main(args) == 0
    result = json.loads(output.read_text())
    plain, chunked = result["cases"]
    assert (plain["chunk_size"], chunked["chunk_size"]) == (None, 4)
    for case in (plain, chunked):
        assert case["finite"] and case["shape"] == [2, 64, 16384]
        assert case["logits_tensor_bytes"] == 2 * 64 * 16384 * 4
        assert case["extra_peak_tensors"] == (
            case["extra_peak_bytes"] / case["logits_tensor_bytes"]
        )
        assert len(case["seconds"]) == 2
    # The gradient is one logits tensor; the unchunked loss holds several
    # more, the chunked one a 4-position chunk's working space.
    assert chunked["extra_peak_tensors"] >= 0.9
    assert chunked["extra_peak_tensors"] < 1.6
    assert plain["extra_peak_tensors"] > chunked["extra_peak_tensors"] + 1
    summary = result["chunked_against_unchunked"]["kd@16384"]
    assert summary["time_ratio"] == (
        chunked["median_seconds"] / plain["median_seconds"]
    )
    assert memory_bench.cases(quick=True) == [
        ("kd", 16384, None),
        ("kd", 16384, 4),
    ]
    assert "extra peak (logits tensors)" in capsys.readouterr().out


def test_sampled_nll_is_the_teachers_nll_of_the_students_tokens():
    from types import SimpleNamespace

    from keras_distill import on_policy
    from keras_distill.app.bench import lm

    teacher = lm.decoder_lm(11, 6, dim=8, layers=1, heads=2, seed=0, name="t")
    student = lm.decoder_lm(11, 6, dim=4, layers=1, heads=1, seed=1, name="s")
    x = np.random.default_rng(0).integers(0, 11, (5, 6)).astype("int32")
    setup = SimpleNamespace(x_val=x, sampled=(4, 2, 3))
    got = lm.sampled_nll(student, teacher, setup, seed=7)
    tokens = on_policy.sample(student, x[:4], 2, 3, 1.0, seed=[7, 1])
    np.testing.assert_array_equal(tokens[:, :2], x[:4, :2])
    logits = np.asarray(teacher(tokens), np.float64)
    logits -= logits.max(-1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -np.mean(
        [log_p[r, t - 1, tokens[r, t]] for r in range(4) for t in (2, 3, 4)]
    )
    np.testing.assert_allclose(got, expected, rtol=1e-5)
