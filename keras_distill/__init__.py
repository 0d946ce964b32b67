"""keras_distill: knowledge distillation for Keras 3 on TensorFlow.

The library (it needs keras, tensorflow and numpy only):

- `keras_distill.Distiller`: a `keras.Model` that trains a student from a
  frozen teacher with `compile` / `fit` / `evaluate` / `predict`.
- `keras_distill.losses`: the distillation losses (KD, DKD, feature hints,
  attention transfer, relational KD, teacher-free KD) and their registry.
- `keras_distill.callbacks`: temperature and loss-weight schedules, and
  `ResumableData` (pipelines that resume at the right epoch).
- `keras_distill.recipes`: reverse KD, born-again networks, mutual
  learning.
- `keras_distill.augment`: consistent augmentation and mixup (function
  matching).
- `keras_distill.on_policy`: on-policy and sequence-level distillation of
  causal language models (tokens generated inside the training step).
- `keras_distill.pipelines`: seeded `tf.data` shuffles and shifts.
- `keras_distill.prune`: magnitude pruning to a target sparsity.
- `keras_distill.quantization`: quantization-aware twins that train with
  the int8 arithmetic of their LiteRT file.
- `keras_distill.teachers`: cached teacher outputs and teacher ensembles.
- `keras_distill.distribute`: multi-worker training for any model.
- `keras_distill.NonFiniteLossError`: what `fit` raises when the loss is
  not finite (under `compile(nan_policy="raise")`).
- `keras_distill.export`: SavedModel and TFLite/LiteRT export, checked
  against Keras (LiteRT from the `export` extra).

Every other module is private (a leading underscore): internal, free to
change in any release.

The application behind the `keras-distill` command lives in
`keras_distill.app` (datasets, the model zoo, runs, reports, benchmarks;
the `app` extra). It is never imported by the library.

Importing the package registers every serializable class (the
`Distiller`, the losses, augmentation, teachers, callbacks, recipes) with
Keras, so `keras.models.load_model` finds them in a new Python process
after a plain `import keras_distill`.
"""

import importlib
import os
import sys


def _is_the_command():
    """Whether this process is the `keras-distill` command (the installed
    script, or `python -m keras_distill.app.cli`)."""
    if not sys.argv:
        return False
    # While `python -m` imports the module's packages, `sys.argv[0]` is
    # "-m" and `sys.orig_argv` names the module.
    if sys.argv[0] == "-m":
        return "keras_distill.app.cli" in getattr(sys, "orig_argv", ())
    return os.path.basename(sys.argv[0]) == "keras-distill"


__version__ = "0.2.0.dev0"

# The public modules. Every other module is private (its name starts with
# an underscore): what it holds may change in any release. docs/api.md
# documents exactly these names and `NonFiniteLossError`, `Distiller`.
_SUBMODULES = (
    "app",
    "augment",
    "callbacks",
    "distribute",
    "export",
    "losses",
    "on_policy",
    "pipelines",
    "prune",
    "quantization",
    "recipes",
    "teachers",
)

__all__ = ["Distiller", "NonFiniteLossError", *_SUBMODULES, "__version__"]

# The modules whose classes Keras must find by name on reload.
_REGISTERING = (
    "augment",
    "callbacks",
    "distribute",
    "losses",
    "on_policy",
    "quantization",
    "recipes",
)


def register_all():
    """Imports every module that registers classes with Keras.

    A plain `import keras_distill` does this; the `keras-distill` command
    defers it until its arguments are parsed, so that `--help` answers
    without importing TensorFlow.
    """
    for name in (*_REGISTERING, "teachers", "distiller"):
        importlib.import_module(f"keras_distill.{name}")


if _is_the_command():
    # Quiet TensorFlow's C++ start-up logs, for the command only (a script
    # or notebook keeps its own settings); TensorFlow loads after parsing.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
else:
    register_all()


def __getattr__(name):
    if name == "Distiller":
        from keras_distill.distiller import Distiller

        return Distiller
    if name == "NonFiniteLossError":
        from keras_distill._nan_guard import NonFiniteLossError

        return NonFiniteLossError
    if name in _SUBMODULES:
        return importlib.import_module(f"keras_distill.{name}")
    raise AttributeError(f"module 'keras_distill' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
