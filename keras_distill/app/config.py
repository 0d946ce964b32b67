"""The command's choices and defaults, readable without TensorFlow.

`keras-distill --help` and the checks of a configuration read these
without importing TensorFlow or Keras; `keras_distill.app.run` and the
model zoo use the same names.
"""

from keras_distill import defaults

AUGMENTS = ("none", "shift", "consistent")
RECIPES = ("kd", "reverse", "born-again", "mutual")
STRATEGIES = ("default", "mirrored", "multi-worker")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
# The models of `keras_distill.app.zoo`, by name.
MODELS = (
    "cnn-large",
    "cnn-medium",
    "cnn-small",
    "mlp-compact",
    "mlp-large",
    "mlp-small",
    "mlp-tiny",
    "resnet-small",
)
# The temperature and the supervised weight (alpha) of each recipe, where
# a config leaves them unset. `kd` is the command's own choice (Hinton et
# al.'s protocol: T = 4, the labels at a tenth); the others are the
# recipes' own defaults (`keras_distill.defaults`).
RECIPE_DEFAULTS = {
    "kd": {"temperature": 4.0, "alpha": 0.1},
    "reverse": dict(defaults.REVERSE),
    "born-again": dict(defaults.BORN_AGAIN),
    "mutual": dict(defaults.MUTUAL),
}
