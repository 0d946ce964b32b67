"""Benchmarks behind `keras-distill bench`, each writing JSON.

- `accuracy` (`keras_distill.app.bench.accuracy`): test errors of the
  teacher, the student from scratch, our distilled students and
  `keras.distillation.Distiller`, over published protocols and seeds.
- `recipes` (`keras_distill.app.bench.recipes`): born-again networks,
  reverse KD, mutual learning and function matching.
- `speed` (`keras_distill.app.bench.speed`): epoch times against Keras'
  distillers.
- `memory` (`keras_distill.app.bench.memory`): peak memory and time of
  one token-level loss step, chunked and not, at large vocabularies.

Results of past runs are in `docs/benchmarks.md`, not here.
"""

import json

from keras_distill._utils import write_text
from keras_distill.app.bench import options

SPEED_DESCRIPTION = (
    "Speed benchmark: the epoch time of keras_distill's Distiller (online "
    "and from a teacher cache) against keras.distillation, the keras.io "
    "example's pattern, the student alone and the bound of one tf.function "
    "step, the variants taking turns epoch by epoch in each of several "
    "fresh single-threaded processes (first quartile of each variant's "
    "epochs, median over processes; the goals read process CPU time)."
)


def _seeded_run_arguments(parser, output):
    """The options of a benchmark that trains over seeds."""
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--output", default=output, help="JSON file to write")


def add_arguments(parser):
    """Adds the `bench` subcommands to an argparse parser."""
    sub = parser.add_subparsers(dest="bench", metavar="BENCHMARK")
    sub.required = True
    accuracy = sub.add_parser(
        "accuracy",
        help="test errors: teacher, scratch, KD, keras.distillation",
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
        choices=sorted(options.PROTOCOLS),
        default=sorted(options.PROTOCOLS),
    )
    accuracy.add_argument(
        "--variants",
        nargs="+",
        choices=list(options.VARIANTS),
        default=list(options.DEFAULT_VARIANTS),
        help="students to train besides the teacher and the scratch one",
    )
    _seeded_run_arguments(accuracy, "bench_accuracy.json")
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
    _seeded_run_arguments(recipes, "bench_recipes.json")
    recipes.add_argument(
        "--only",
        nargs="+",
        choices=options.KEYS,
        metavar="KEY",
        help="train only these models (and those they are trained from): "
        + ", ".join(options.KEYS),
    )
    lm = sub.add_parser(
        "lm",
        help="language models: token-level KD, JSD, on-policy, top-k "
        "caches, TFLite",
        description=(
            "Language-model benchmark on the source of the Python standard "
            "library (split by module; --corpus docs: the documentation "
            "Python ships): a small decoder Transformer distilled from a "
            "larger one with forward KD, GKD's JSD off and on policy and "
            "top-k teacher caches; validation cross-entropy per token, the "
            "teacher's NLL of what each student generates, cache bytes, "
            "and the int8 TFLite student. Needs the `hub` extra for its "
            "WordPiece tokenizer."
        ),
    )
    lm.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    lm.add_argument("--corpus", choices=("stdlib", "docs"), default="stdlib")
    lm.add_argument("--epochs", type=int, default=3)
    lm.add_argument("--teacher-epochs", type=int, default=8)
    lm.add_argument("--batch-size", type=int, default=32)
    lm.add_argument(
        "--quick", action="store_true", help="a tiny configuration, 1 epoch"
    )
    lm.add_argument("--output", default="bench_lm.json", help="JSON file")
    speed_parser = sub.add_parser(
        "speed",
        help="epoch times: keras_distill online and cached against Keras' "
        "distillers",
        description=SPEED_DESCRIPTION,
    )
    speed_parser.add_argument(
        "--preset", choices=sorted(options.PRESETS), default="mlp"
    )
    speed_parser.add_argument(
        "--quick",
        action="store_true",
        help="512 examples, 3 rounds a process",
    )
    speed_parser.add_argument(
        "--rounds",
        type=int,
        default=options.DEFAULT_ROUNDS,
        help="rounds per process: each is one turn of every variant",
    )
    speed_parser.add_argument(
        "--processes",
        type=int,
        default=options.DEFAULT_PROCESSES,
        help="fresh processes, one after the other; each figure and ratio "
        "is the median over them (the goals read the CPU-time ratios)",
    )
    speed_parser.add_argument(
        "--min-seconds",
        type=float,
        default=options.DEFAULT_MIN_SECONDS,
        help="the least time of a variant's turn (epochs repeat until "
        "then; 0: one epoch a turn)",
    )
    speed_parser.add_argument(
        "--threads",
        type=int,
        default=options.DEFAULT_THREADS,
        help="TensorFlow's intra- and inter-op threads in each process "
        "(0: TensorFlow's own choice)",
    )
    speed_parser.add_argument("--batch-size", type=int, default=64)
    memory = sub.add_parser(
        "memory",
        help="peak memory of a token-level loss step, chunked or not",
        description=(
            "Memory benchmark: the extra peak memory (in logits tensors) "
            "and the time of one forward and backward pass of the token "
            "losses on (2, 256, V) float32 logits, V = 32,768 and 262,144, "
            "chunked and unchunked, against keras.distillation and a bare "
            "log-softmax KL; each case in a fresh process. Linux only."
        ),
    )
    memory.add_argument(
        "--quick", action="store_true", help="(2, 64, 16384) logits"
    )
    memory.add_argument("--repeats", type=int, default=5)
    memory.add_argument(
        "--output", default="bench_memory.json", help="JSON file to write"
    )
    speed_parser.add_argument(
        "--output", default="bench_speed.json", help="JSON file to write"
    )


def main(args, log=print):
    """Runs the benchmark named in `args.bench`; returns an exit status."""
    from keras_distill.app.bench import accuracy as accuracy_bench
    from keras_distill.app.bench import recipes as recipes_bench
    from keras_distill.app.bench import speed as speed_bench

    if args.bench == "memory":
        from keras_distill.app.bench import memory as memory_bench

        result = memory_bench.run(args.quick, args.repeats, log)
        return _write(args.output, result, memory_bench.table(result), log)
    common = dict(batch_size=args.batch_size, log=log)
    if args.bench == "accuracy":
        result = accuracy_bench.run(
            protocols=args.protocol,
            variants=args.variants,
            seeds=args.seeds,
            epochs=args.epochs,
            dataset=args.dataset,
            output=args.output,  # written after each seed too
            **common,
        )
        text = accuracy_bench.table(result)
    elif args.bench == "recipes":
        result = recipes_bench.run(
            seeds=args.seeds,
            epochs=args.epochs,
            dataset=args.dataset,
            output=args.output,  # written after each seed too
            only=args.only,
            **common,
        )
        text = recipes_bench.table(result)
    elif args.bench == "lm":
        from keras_distill.app.bench import lm as lm_bench

        epochs = 1 if args.quick else args.epochs
        teacher_epochs = 1 if args.quick else args.teacher_epochs
        result = lm_bench.run(
            seeds=args.seeds,
            epochs=epochs,
            teacher_epochs=teacher_epochs,
            quick=args.quick,
            output=args.output,
            corpus_name=args.corpus,
            **common,
        )
        text = lm_bench.table(result)
    else:
        result = speed_bench.run(
            preset=args.preset,
            quick=args.quick,
            rounds=args.rounds,
            min_seconds=args.min_seconds,
            processes=args.processes,
            threads=args.threads,
            **common,
        )
        text = speed_bench.table(result)
    return _write(args.output, result, text, log)


def _write(output, result, text, log):
    write_text(output, json.dumps(result, indent=2) + "\n")
    log(text)
    log(f"\nJSON written to {output}")
    return 0
