"""The application behind the `keras-distill` command.

Built on the library (`keras_distill`) and never imported by it; it needs
the `app` extra (`pip install "keras-distill[app]"`) for its datasets,
plots and configuration files:

- `keras_distill.app.cli`: the command line.
- `keras_distill.app.config`: a run's configuration (`RunConfig`) and
  the command's choices, without TensorFlow.
- `keras_distill.app.run`: a run's phases (train, distill, compare,
  export).
- `keras_distill.app.rundir`: the run directory (config, models, metrics).
- `keras_distill.app.environment`: the versions a result was made with.
- `keras_distill.app.report`: the run's Markdown report and plots.
- `keras_distill.app.datasets`: the bundled MNIST-5k and digits, TFDS by
  name, the user's arrays and data folders, as `tf.data` pipelines.
- `keras_distill.app.folders`: data folders (one subfolder per class),
  checked without TensorFlow.
- `keras_distill.app.zoo`: reference teacher and student models by name.
- `keras_distill.app.robustness`: accuracy on perturbed test sets.
- `keras_distill.app.bench`: the benchmarks (`keras-distill bench`).
"""

import importlib

_SUBMODULES = (
    "bench",
    "cli",
    "config",
    "datasets",
    "environment",
    "folders",
    "report",
    "robustness",
    "run",
    "rundir",
    "zoo",
)
__all__ = list(_SUBMODULES)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"keras_distill.app.{name}")
    raise AttributeError(
        f"module 'keras_distill.app' has no attribute {name!r}"
    )
