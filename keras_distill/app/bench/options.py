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
# speed: fresh processes per run, and timed units per variant in each
# (about 12 minutes a run on a 2-core machine). A variant can run a few
# per cent faster or slower for a whole process: with one process of 21
# rounds or three of 7, 11 of 21 ratio comparisons in three pairs of
# runs agreed within 3%; with six of 3, 18 of 21.
DEFAULT_PROCESSES = 6
DEFAULT_ROUNDS = 3
