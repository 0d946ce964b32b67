"""What each benchmark can be asked for, readable without TensorFlow.

`keras-distill bench --help` lists these choices; the benchmarks
(`accuracy.py`, `recipes.py`, `speed.py`) use the same definitions.
"""

# accuracy: published protocols on MNIST-5k.
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
# Distilled students the benchmark can train, besides the teacher and the
# student from scratch, with their column labels.
VARIANTS = {
    "kd": "KD",
    "kd_shift": "KD+shift",
    "keras": "keras",
    "dkd": "DKD",
    "kd_hint": "KD+hint",
}
DEFAULT_VARIANTS = ("kd", "kd_shift", "keras")

# recipes: the models the recipes benchmark trains, in order.
KEYS = (
    "teacher",
    "scratch",
    "kd",
    "function_matching",
    "born_again_1",
    "born_again_2",
    "born_again_ensemble",
    "large_scratch",
    "reverse",
    "mutual_a",
    "mutual_b",
)

# speed: the teacher and student pairs it times.
PRESETS = {
    "mlp": dict(teacher="mlp-large", student="mlp-small"),
    "mnist-cnn": dict(teacher="cnn-large", student="cnn-small"),
}
# speed: fresh processes per run, rounds per process (a round is one
# epoch of every variant, the variants taking turns epoch by epoch), the
# least time of a variant's turn (0: one epoch) and TensorFlow's threads
# in each process (13 to 16.5 minutes a run on a 2-core machine). Against
# turns of 2 s or more (3 rounds) on TensorFlow's own threads, this
# halves the spread of a ratio from one process to the next (3.4-5.6%
# to 2.1-3.1%; 1.1-3.4% on a quieter host, where three pairs of runs
# agreed within 2.1%); `docs/benchmarks.md` has the pairs of runs.
DEFAULT_PROCESSES = 6
DEFAULT_ROUNDS = 12
DEFAULT_MIN_SECONDS = 0.0
DEFAULT_THREADS = 1
