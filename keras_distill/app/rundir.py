"""The run directory: its files, its workers' folders and its metrics.

A run directory (`saved_models/<run>/`) holds everything one job makes:
`config.json` (enough to rerun it), `teacher.keras`, `scratch.keras` (the
student trained from labels alone), `student.keras` (the distilled
student), exported `student*.tflite` files, `metrics.json`, `report.md` and
PNG plots. `RunDirectory` reads and writes them; `keras_distill.app.run.Run`
adds the phases that make them.
"""

import json
import os

import keras

from keras_distill._utils import write_text
from keras_distill.app.config import CONFIG_FILE
from keras_distill.app.config import METRICS_FILE
from keras_distill.app.config import RunConfig
from keras_distill.app.environment import versions


def _worker_index():
    """This process' worker index in `TF_CONFIG` (0 without one)."""
    try:
        tf_config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    except json.JSONDecodeError as error:
        raise ValueError(
            "Invalid TF_CONFIG environment variable. Expected JSON. "
            f"Received: {os.environ.get('TF_CONFIG')!r}"
        ) from error
    task = tf_config.get("task", {})
    if task.get("type") in ("chief", None):
        return 0
    index = int(task.get("index", 0))
    # With a chief, worker 0 is not the chief.
    has_chief = bool(tf_config.get("cluster", {}).get("chief"))
    return index + 1 if has_chief else index


def _make_run_dir(path):
    """Creates the run directory, or says clearly why it cannot."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise OSError(
            f"Cannot create the run directory {path!r}: "
            f"{error.strerror or error}. Expected a writable directory path."
        ) from error
    if not os.access(path, os.W_OK):
        raise OSError(
            f"Cannot write to the run directory {path!r}. Expected a "
            "writable directory."
        )


def _missing_model(name, path):
    command = {
        "teacher": "train-teacher",
        "scratch": "scratch",
        "student": "distill",
    }[name]
    return (
        f"No {name} model in {path!r}: run `keras-distill {command} --run "
        f"{path}` first."
    )


def check_phase(command, path, config):
    """Checks that a phase has the models it starts from, before anything
    is written.

    Args:
        command: The `keras-distill` command (`distill`, `export`, ...).
        path: The run directory.
        config: The `RunConfig`.

    Raises:
        FileNotFoundError: If the phase needs a model the run lacks,
            naming the command that makes it.
    """
    needs = {
        "distill": ["teacher"],
        "export": ["student"],
        "compare": ["teacher", "scratch", "student"],
    }.get(command, [])
    if command == "distill" and config.recipe == "mutual":
        return
    for name in needs:
        if not os.path.exists(os.path.join(path, f"{name}.keras")):
            raise FileNotFoundError(_missing_model(name, path))


class RunDirectory:
    """One run's directory: its config, its models and its metrics.

    Creating one creates the directory (workers other than a multi-worker
    run's chief get their own `worker-<index>` folder inside it) and
    writes the config to `config.json`.

    Args:
        path: The run directory (created if needed).
        config: A `RunConfig`. Defaults to the directory's `config.json`
            when there is one, else to `RunConfig()`.

    Raises:
        OSError: If the directory cannot be created or written to.
    """

    def __init__(self, path, config=None):
        self.path = os.fspath(path)
        _make_run_dir(self.path)
        if config is None:
            saved = self.file(CONFIG_FILE)
            config = (
                RunConfig.from_file(saved)
                if os.path.exists(saved)
                else RunConfig()
            )
        self.config = config
        worker = _worker_index() if config.strategy == "multi-worker" else 0
        # Workers other than the chief write their own copies apart.
        self._worker_folder = f"worker-{worker}" if worker else ""
        if worker:
            self.path = os.path.join(self.path, self._worker_folder)
            _make_run_dir(self.path)
        write_text(
            self.file(CONFIG_FILE),
            json.dumps(config.to_dict(), indent=2) + "\n",
        )

    def file(self, name):
        """The path of a file of the run directory."""
        return os.path.join(self.path, name)

    def load(self, name):
        """Loads `teacher`, `scratch` or `student` from the run directory.

        Raises:
            FileNotFoundError: If that phase has not run yet, naming the
                command that makes the file.
        """
        path = self.file(f"{name}.keras")
        if not os.path.exists(path):
            raise FileNotFoundError(_missing_model(name, self.path))
        return keras.models.load_model(path)

    def backup_dir(self, name):
        """Where phase `name` keeps its `BackupAndRestore` state.

        `<backup_dir>/<name>`; workers other than a multi-worker run's
        chief keep their own in `<backup_dir>/worker-<index>/<name>` (the
        files of Keras' callback cannot be shared between processes).
        None when the run keeps no backups.
        """
        if not self.config.backup_dir:
            return None
        return os.path.join(self.config.backup_dir, self._worker_folder, name)

    # -- metrics -------------------------------------------------------------

    def metrics(self):
        """The run's `metrics.json` as a dict (empty if not written yet)."""
        path = self.file(METRICS_FILE)
        if not os.path.exists(path):
            return {}
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    def _write_metrics(self, metrics):
        metrics["config"] = self.config.resolved().to_dict()
        metrics["versions"] = versions()
        write_text(
            self.file(METRICS_FILE), json.dumps(metrics, indent=2) + "\n"
        )

    def _record(self, name, model, history, seconds, **extra):
        metrics = self.metrics()
        metrics[name] = dict(
            params=int(model.count_params()),
            train_seconds=round(seconds, 2),
            history={k: [float(v) for v in vs] for k, vs in history.items()},
            **extra,
        )
        self._write_metrics(metrics)
