"""A distillation run: its configuration, its phases and its directory.

A run directory (`saved_models/<run>/`) holds everything one job makes:
`config.json` (enough to rerun it), `teacher.keras`, `scratch.keras` (the
student trained from labels alone), `student.keras` (the distilled
student), exported `student*.tflite` files, `metrics.json`, `report.md` and
PNG plots. Each phase reads what earlier phases wrote, so the CLI can run
them one at a time or all at once.
"""

import dataclasses
import functools
import hashlib
import json
import os
import platform
import sys
import time

import numpy as np

from keras_distill.app.config import AUGMENTS
from keras_distill.app.config import CONFIG_FILE
from keras_distill.app.config import METRICS_FILE
from keras_distill.app.config import OPTIMIZERS
from keras_distill.app.config import RECIPE_DEFAULTS
from keras_distill.app.config import RECIPES
from keras_distill.app.config import STRATEGIES
from keras_distill.pipelines import shift_augment
from keras_distill.utils import predict
from keras_distill.utils import save_model
from keras_distill.utils import write_text

# Random 2-pixel shifts help 28×28 digits and wreck 8×8 ones.
MIN_SHIFT_SIZE = 16


@dataclasses.dataclass
class RunConfig:
    """Everything that defines a run. Every field can be set by a config
    file (YAML or JSON) or a command-line flag of the same name.

    Attributes:
        dataset: A data source (see `keras_distill.app.datasets.load`).
        data_dir: The TFDS data directory, for `tfds:<name>` datasets.
        teacher: A `keras_distill.app.zoo` model name for the teacher.
        student: A `keras_distill.app.zoo` model name for the student.
        temperature: The distillation temperature T, or null for the
            recipe's (`RECIPE_DEFAULTS`: 4 for `kd` and `reverse`, 1 for
            `born-again` and `mutual`).
        alpha: The weight of the student's supervised loss, in [0, 1], or
            null for the recipe's (0.1 for `kd`, 0.5 for `reverse` and
            `born-again`; `mutual` has none and ignores it).
        losses: Distillation losses, as registry names or Keras
            `{"class_name", "config"}` dicts. Defaults to
            `LogitsDistillation(temperature)`. A loss given by name that
            has a temperature uses `temperature`.
        features: FitNets hints as `"teacher_layer:student_layer"`
            strings, each added as a `FeatureDistillation` with a learned
            adapter (after `losses`, or after `LogitsDistillation` when
            `losses` is not given).
        loss_weights: One weight per distillation loss (hints included),
            or null for 1.0 each.
        epochs: Training epochs of the students (distilled and scratch).
        teacher_epochs: Training epochs of the teacher (null: the same as
            `epochs`).
        batch_size: Batch size of every phase.
        optimizer: `adam`, `adamw`, `sgd` or `rmsprop`.
        learning_rate: The optimizer's learning rate.
        seed: Seed of the weights, the shuffling and the augmentation.
        validation_split: Share of the train part held out for validation.
        teacher_augment: `shift` (random shifts of up to 2 pixels while
            the teacher trains, as in Hinton et al.), `none`, or null (the
            default): `shift` for images of at least 16×16 pixels (MNIST's
            28×28), `none` for smaller ones (2 pixels wreck the 8×8
            digits) and for inputs that are not images.
        augment: The same for the students (distilled and scratch alike);
            a distilled student's teacher sees the same shifted batch.
            Null (the default) picks by image size as for the teacher.
            `consistent`: function matching, the distilled student and
            its teacher see the same shifted and mixed-up batch
            (`keras_distill.augment`), the student from scratch gets the
            shifts.
        recipe: `kd` (the default), `reverse` (the teacher phase trains the
            `student` architecture, which then teaches the `teacher`
            architecture; scratch trains the `teacher` architecture),
            `born-again` (the teacher's architecture distilled from the
            teacher, `generations` times; scratch trains it from labels),
            or `mutual` (two `student` models trained together by deep
            mutual learning, no teacher needed).
        generations: Born-again generations (a positive int).
        quantize: TFLite variants the `export` phase writes, among
            `float32`, `float16`, `dynamic`, `int8`.
        strategy: `default` (one device), `mirrored` (every local GPU, or
            the CPU) or `multi-worker` (`MultiWorkerMirroredStrategy`,
            configured by the `TF_CONFIG` environment variable; workers
            other than the chief write into `<run>/worker-<index>`).
        backup_dir: A directory for `keras.callbacks.BackupAndRestore`:
            a training phase killed mid-way resumes at its last finished
            epoch when rerun with the same directory. Null: no backups.
            Under `multi-worker`, workers other than the chief keep theirs
            in `<backup_dir>/worker-<index>`.
    """

    dataset: str = "mnist5k"
    data_dir: object = None
    teacher: str = "cnn-medium"
    student: str = "mlp-compact"
    temperature: object = None
    alpha: object = None
    losses: object = None
    features: object = None
    loss_weights: object = None
    epochs: int = 20
    teacher_epochs: object = 15
    batch_size: int = 64
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    seed: int = 0
    validation_split: float = 0.1
    teacher_augment: object = None
    augment: object = None
    quantize: list = dataclasses.field(
        default_factory=lambda: ["float32", "int8"]
    )
    strategy: str = "default"
    backup_dir: object = None
    recipe: str = "kd"
    generations: int = 2

    def __post_init__(self):
        self.validate()

    def validate(self):
        """Checks every field; raises `ValueError` naming the bad one."""
        from keras_distill.app import zoo

        def fail(field, expected):
            raise ValueError(
                f"Invalid value for `{field}`. Expected {expected}. "
                f"Received: {field}={getattr(self, field)!r}"
            )

        def is_int(value):
            return isinstance(value, int) and not isinstance(value, bool)

        def is_number(value):
            return isinstance(value, (int, float)) and not isinstance(
                value, bool
            )

        for field in ("teacher", "student"):
            if getattr(self, field) not in zoo.names():
                fail(field, f"one of {zoo.names()}")
        if self.temperature is not None and (
            not is_number(self.temperature) or not self.temperature > 0
        ):
            fail("temperature", "a positive float or null")
        if self.alpha is not None and (
            not is_number(self.alpha) or not 0 <= self.alpha <= 1
        ):
            fail("alpha", "a float in [0, 1] or null")
        for field in ("epochs", "batch_size"):
            if not is_int(getattr(self, field)) or getattr(self, field) < 1:
                fail(field, "a positive int")
        if self.teacher_epochs is not None and (
            not is_int(self.teacher_epochs) or self.teacher_epochs < 1
        ):
            fail("teacher_epochs", "a positive int or null")
        if not is_int(self.seed):
            fail("seed", "an int")
        if self.optimizer not in OPTIMIZERS:
            fail("optimizer", f"one of {list(OPTIMIZERS)}")
        if not is_number(self.learning_rate) or not self.learning_rate > 0:
            fail("learning_rate", "a positive float")
        if not is_number(self.validation_split) or not (
            0 <= self.validation_split < 1
        ):
            fail("validation_split", "a float in [0, 1)")
        for field in ("augment", "teacher_augment"):
            value = getattr(self, field)
            if value is not None and value not in AUGMENTS:
                fail(field, f"one of {list(AUGMENTS)} or null")
        if self.recipe not in RECIPES:
            fail("recipe", f"one of {list(RECIPES)}")
        if not is_int(self.generations) or self.generations < 1:
            fail("generations", "a positive int")
        if self.teacher_augment == "consistent":
            fail("teacher_augment", "'none' or 'shift'")
        if self.strategy not in STRATEGIES:
            fail("strategy", f"one of {list(STRATEGIES)}")
        if self.backup_dir is not None and (
            not isinstance(self.backup_dir, str) or not self.backup_dir
        ):
            fail("backup_dir", "a directory path or null")
        if not isinstance(self.dataset, str) or not self.dataset:
            fail("dataset", "a data source name or a .npz path")
        modes = ("float32", "float16", "dynamic", "int8")
        if isinstance(self.quantize, str):
            self.quantize = [self.quantize]
        if not isinstance(self.quantize, (list, tuple)) or any(
            q not in modes for q in self.quantize
        ):
            fail("quantize", f"a list of {list(modes)}")
        self.quantize = list(self.quantize)
        if self.losses is not None:
            from keras_distill import losses

            items = (
                self.losses
                if isinstance(self.losses, (list, tuple))
                else [self.losses]
            )
            for item in items:
                losses.get(item)  # raises with the known names
        if self.features is not None:
            if isinstance(self.features, str):
                self.features = [self.features]
            if not isinstance(self.features, (list, tuple)) or not all(
                isinstance(x, str)
                and len(x.split(":")) == 2
                and all(x.split(":"))
                for x in self.features
            ):
                fail("features", "a list of 'teacher_layer:student_layer'")
            self.features = list(self.features)
        if self.loss_weights is not None:
            if is_number(self.loss_weights):
                self.loss_weights = [self.loss_weights]
            if not isinstance(self.loss_weights, (list, tuple)) or not all(
                is_number(w) and w >= 0 for w in self.loss_weights
            ):
                fail("loss_weights", "a list of non-negative floats")
            self.loss_weights = list(self.loss_weights)

    @classmethod
    def fields(cls):
        """The names of every field."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values):
        """Builds a config from a dict, refusing unknown keys.

        Args:
            values: A dict of field values.

        Returns:
            A `RunConfig`.

        Raises:
            ValueError: For an unknown key or an invalid value.
        """
        if not isinstance(values, dict):
            raise ValueError(
                "Invalid configuration. Expected a mapping of field names to "
                f"values. Received: {type(values).__name__}"
            )
        unknown = sorted(set(values) - set(cls.fields()))
        if unknown:
            raise ValueError(
                f"Invalid configuration key(s) {unknown}. Expected keys "
                f"among {cls.fields()}."
            )
        return cls(**values)

    @classmethod
    def from_file(cls, path):
        """Reads a YAML (`.yaml`, `.yml`) or JSON config file.

        Args:
            path: The file.

        Returns:
            A `RunConfig`.

        Raises:
            FileNotFoundError: If the file does not exist.
            ValueError: If it cannot be parsed or holds invalid values.
        """
        return cls.from_dict(read_config_file(path))

    def to_dict(self):
        """The config as a JSON-serializable dict."""
        return dataclasses.asdict(self)

    def resolved(self):
        """A copy with `temperature` and `alpha` set: the fields where
        given, else the recipe's `RECIPE_DEFAULTS`.

        Returns:
            A new `RunConfig`.
        """
        defaults = RECIPE_DEFAULTS[self.recipe]
        return dataclasses.replace(
            self,
            **{
                k: v if getattr(self, k) is None else getattr(self, k)
                for k, v in defaults.items()
            },
        )

    def architecture(self, role):
        """The zoo name trained in a role (`teacher`, `student`, `scratch`).

        The recipe decides: reverse KD swaps the two architectures,
        born-again networks use the teacher's for every role.
        """
        if self.recipe == "reverse":
            return self.student if role == "teacher" else self.teacher
        if self.recipe == "born-again":
            return self.teacher
        return self.teacher if role == "teacher" else self.student

    def teacher_fingerprint(self):
        """A hash of everything that determines the trained teacher."""
        keys = (
            "dataset",
            "data_dir",
            "teacher_epochs",
            "epochs",
            "batch_size",
            "optimizer",
            "learning_rate",
            "seed",
            "validation_split",
            "teacher_augment",
        )
        values = {k: getattr(self, k) for k in keys}
        values["teacher"] = self.architecture("teacher")
        values["teacher_epochs"] = self.teacher_epochs or self.epochs
        del values["epochs"]
        text = json.dumps(values, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


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


def read_config_file(path):
    """Parses a YAML or JSON config file into a dict.

    Args:
        path: A `.json`, `.yaml` or `.yml` file.

    Returns:
        The parsed dict.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it cannot be parsed or is not a mapping.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such config file: {path!r}")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    is_yaml = path.endswith((".yaml", ".yml"))
    if is_yaml:
        from keras_distill.utils import optional_import

        yaml = optional_import("yaml", "app", "A YAML config file")
    try:
        if is_yaml:
            values = yaml.safe_load(text)
        else:
            values = json.loads(text)
    except Exception as error:  # yaml and json raise different errors
        raise ValueError(
            f"Invalid config file {path!r}: it does not parse ({error})."
        ) from None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ValueError(
            f"Invalid config file {path!r}. Expected a mapping of field "
            f"names to values. Received: {type(values).__name__}"
        )
    return values


def versions():
    """Versions of Python, TensorFlow, Keras, NumPy and this package."""
    import keras
    import tensorflow as tf

    from keras_distill import __version__

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "keras_distill": __version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }


def _in_scope(phase):
    """Runs a training phase inside the run's distribution strategy."""

    @functools.wraps(phase)
    def wrapper(self, *args, **kwargs):
        with self.strategy.scope():
            return phase(self, *args, **kwargs)

    return wrapper


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


def check_data(config):
    """Loads the run's data as arrays, to refuse a bad source early.

    NumPy only: no TensorFlow op runs, so a multi-worker strategy can
    still be created afterwards. The bundled datasets are cached, so the
    run's own loading costs nothing more.

    Raises:
        ValueError: For an unknown source or invalid content.
        FileNotFoundError: When the data is not on disk.
    """
    from keras_distill.app import datasets as data

    data.load_arrays(
        config.dataset,
        validation_split=config.validation_split,
        seed=config.seed,
        data_dir=config.data_dir,
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


class Run:
    """The phases of one distillation job, over one run directory.

    Args:
        path: The run directory (created if needed).
        config: A `RunConfig`. Defaults to the directory's `config.json`
            when there is one, else to `RunConfig()`.
        verbose: Keras' `verbose` for training (0, 1 or 2); None picks 1
            on a terminal and 2 (a line per epoch) elsewhere.
        log: A function that prints a progress line.

    Example:

    ```python
    run = keras_distill.app.run.Run("saved_models/mine", RunConfig(epochs=5))
    run.train_teacher()
    run.distill()
    run.scratch()
    run.evaluate()
    ```
    """

    def __init__(self, path, config=None, verbose=None, log=print):
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
        if verbose is None:
            verbose = 1 if sys.stdout.isatty() else 2
        self.verbose = verbose
        self.log = log
        self._data = None
        self._strategy = None
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

    @property
    def strategy(self):
        """The run's `tf.distribute.Strategy` (created once)."""
        if self._strategy is None:
            import tensorflow as tf

            kind = self.config.strategy
            if kind == "mirrored":
                self._strategy = tf.distribute.MirroredStrategy()
            elif kind == "multi-worker":
                self._strategy = tf.distribute.MultiWorkerMirroredStrategy()
            else:
                self._strategy = tf.distribute.get_strategy()
            replicas = self._strategy.num_replicas_in_sync
            if kind != "default":
                self.log(f"[strategy] {kind}: {replicas} replicas in sync")
        return self._strategy

    def file(self, name):
        """The path of a file of the run directory."""
        return os.path.join(self.path, name)

    # -- data and models -----------------------------------------------------

    @property
    def data(self):
        """The run's `keras_distill.app.datasets.Data` (loaded once)."""
        if self._data is None:
            from keras_distill.app import datasets as data

            c = self.config
            self._data = data.load(
                c.dataset,
                batch_size=c.batch_size,
                validation_split=c.validation_split,
                seed=c.seed,
                data_dir=c.data_dir,
            )
        return self._data

    def train_dataset(self, role="student"):
        """A fresh training pipeline, with the role's augmentation applied.

        Each phase gets its own pipeline, so its shuffling and shifts depend
        on the seed alone, not on how many epochs an earlier phase of the
        same process drew: `keras-distill distill` run alone gives what the
        same phase gives inside `keras-distill demo`.
        """
        from keras_distill.pipelines import pipeline

        c = self.config
        arrays = self.data.arrays
        train = pipeline(
            arrays.x_train,
            arrays.y_train,
            c.batch_size,
            shuffle=True,
            seed=c.seed,
        )
        augment = self.augmentation(role)
        if augment in ("shift", "consistent"):
            if not (augment == "consistent" and role == "student"):
                train = shift_augment(train, seed=self.config.seed)
        return train

    def augmentation(self, role="student"):
        """The role's augmentation: the config's, or by image size.

        Args:
            role: `"teacher"` or `"student"`.

        Returns:
            `"shift"`, `"none"` or `"consistent"`. An unset (null) value
            means `"shift"` for images of at least `MIN_SHIFT_SIZE` pixels
            a side and `"none"` otherwise.
        """
        value = (
            self.config.teacher_augment
            if role == "teacher"
            else self.config.augment
        )
        if value is not None:
            return value
        shape = self.data.arrays.x_train.shape[1:]
        images = len(shape) == 3 and min(shape[:2]) >= MIN_SHIFT_SIZE
        return "shift" if images else "none"

    def consistent_augment(self):
        """The distiller's in-step augmentation, or None.

        With `augment: consistent`: shifts of up to 2 pixels (images only)
        and mixup (alpha 0.2), seeded by the run's seed.
        """
        from keras_distill import augment

        if self.config.augment != "consistent":
            return None
        seed = self.config.seed
        layers = []
        if len(self.data.input_shape) == 3:
            layers.append(augment.RandomShift(2, seed=seed))
        layers.append(augment.Mixup(0.2, seed=seed + 1))
        return augment.ConsistentAugment(layers)

    def _optimizer(self):
        import keras

        c = self.config
        classes = {
            "adam": keras.optimizers.Adam,
            "adamw": keras.optimizers.AdamW,
            "sgd": keras.optimizers.SGD,
            "rmsprop": keras.optimizers.RMSprop,
        }
        return classes[c.optimizer](learning_rate=c.learning_rate)

    def _build(self, role, seed=None):
        import keras

        from keras_distill.app import zoo

        c = self.config
        keras.utils.set_random_seed(c.seed)
        name = c.architecture(role)
        if seed is None:
            seed = c.seed if role == "teacher" else c.seed + 1
        return zoo.build(
            name, self.data.input_shape, self.data.num_classes, seed=seed
        )

    def _compile_args(self):
        import keras

        return dict(
            optimizer=self._optimizer(),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )

    def load(self, name):
        """Loads `teacher`, `scratch` or `student` from the run directory.

        Raises:
            FileNotFoundError: If that phase has not run yet, naming the
                command that makes the file.
        """
        import keras

        path = self.file(f"{name}.keras")
        if not os.path.exists(path):
            raise FileNotFoundError(_missing_model(name, self.path))
        return keras.models.load_model(path)

    # -- phases --------------------------------------------------------------

    @_in_scope
    def train_teacher(self, force=False):
        """Trains the teacher, or reuses the one trained with this config.

        Args:
            force: Retrain even if a matching teacher exists.

        Returns:
            The teacher `keras.Model`.
        """
        fingerprint = self.config.teacher_fingerprint()
        metrics = self.metrics()
        previous = metrics.get("teacher", {}).get("fingerprint")
        if (
            not force
            and previous == fingerprint
            and os.path.exists(self.file("teacher.keras"))
        ):
            self.log(
                f"[teacher] reusing {self.file('teacher.keras')} (trained "
                "with the same configuration and data)"
            )
            return self.load("teacher")
        c = self.config
        epochs = c.teacher_epochs or c.epochs
        teacher = self._build("teacher")
        self.log(
            f"[teacher] training {c.teacher} ({teacher.count_params():,} "
            f"parameters) for {epochs} epochs on {c.dataset}"
        )
        trainer = self._trainer(teacher)
        trainer.compile(**self._compile_args())
        return self._train(
            "teacher", trainer, teacher, epochs, fingerprint=fingerprint
        )

    @_in_scope
    def distill(self):
        """Distills the student from the run's teacher.

        Returns:
            The trained student `keras.Model`.
        """
        c = self.config.resolved()
        if c.recipe == "mutual":
            return self._mutual()
        teacher = self.load("teacher")
        if c.recipe == "born-again":
            return self._born_again(teacher)
        student = self._build("student")
        distiller = self._distiller(teacher, student)
        self.log(
            f"[distill] {c.architecture('student')} "
            f"({student.count_params():,} parameters) from "
            f"{c.architecture('teacher')}, recipe {c.recipe}, "
            f"T={c.temperature}, alpha={c.alpha}, {c.epochs} epochs"
        )
        return self._train("student", distiller, student, c.epochs)

    def _distiller(self, teacher, student):
        from keras_distill.distiller import Distiller

        c = self.config.resolved()
        distiller = Distiller(
            teacher,
            student,
            self.distillation_losses(),
            distillation_loss_weights=c.loss_weights,
            student_loss_weight=c.alpha,
            augment=self.consistent_augment(),
        )
        distiller.compile(**self._compile_args())
        return distiller

    def _born_again(self, teacher):
        """Born-again generations; the last one is the run's student."""
        from keras_distill.utils import predict

        c = self.config.resolved()
        arrays = self.data.arrays
        generations = []
        for k in range(1, c.generations + 1):
            student = self._build("student")
            self.log(
                f"[distill] born-again generation {k}/{c.generations}: "
                f"{c.teacher} from generation {k - 1}, T={c.temperature}, "
                f"alpha={c.alpha}, {c.epochs} epochs"
            )
            distiller = self._distiller(teacher, student)
            if k < c.generations:
                self._fit("student", distiller, c.epochs)
            else:
                self._train("student", distiller, student, c.epochs)
            logits = predict(student, arrays.x_test)
            generations.append(int(np.sum(logits.argmax(-1) != arrays.y_test)))
            self.log(f"[distill] generation {k}: {generations[-1]} errors")
            teacher = student
        metrics = self.metrics()
        metrics["student"]["generation_errors"] = generations
        self._write_metrics(metrics)
        return teacher

    def _mutual(self):
        """Two students trained together; the first is the run's student."""
        from keras_distill.recipes import MutualLearning
        from keras_distill.utils import predict

        c = self.config.resolved()
        student = self._build("student")
        peer = self._build("student", seed=c.seed + 2)  # another start
        peer.name = f"{peer.name}_peer"
        mutual = MutualLearning([student, peer], temperature=c.temperature)
        args = self._compile_args()
        mutual.compile(args["optimizer"], args["loss"], args["metrics"])
        self.log(
            f"[distill] deep mutual learning of two {c.student} models, "
            f"T={c.temperature}, {c.epochs} epochs"
        )
        self._train("student", mutual, student, c.epochs)
        arrays = self.data.arrays
        logits = predict(peer, arrays.x_test)
        metrics = self.metrics()
        metrics["student"]["peer_errors"] = int(
            np.sum(logits.argmax(-1) != arrays.y_test)
        )
        self._write_metrics(metrics)
        return student

    def distillation_losses(self):
        """The configured distillation losses, hints included."""
        from keras_distill import losses as losses_module

        c = self.config.resolved()
        if c.losses is None:
            chosen = [losses_module.LogitsDistillation(c.temperature)]
        else:
            items = c.losses if isinstance(c.losses, list) else [c.losses]
            chosen = []
            for item in items:
                loss = losses_module.get(item)
                if isinstance(item, str) and "temperature" in loss.variables:
                    loss.temperature = c.temperature
                chosen.append(loss)
        for pair in c.features or []:
            teacher_layer, student_layer = pair.split(":")
            chosen.append(
                losses_module.FeatureDistillation(teacher_layer, student_layer)
            )
        return chosen

    @_in_scope
    def scratch(self):
        """Trains the same student from labels alone, for comparison.

        Returns:
            The trained `keras.Model`.
        """
        c = self.config
        student = self._build("student")
        trainer = self._trainer(student)
        trainer.compile(**self._compile_args())
        self.log(f"[scratch] {c.student} from labels alone, {c.epochs} epochs")
        return self._train("scratch", trainer, student, c.epochs)

    def _trainer(self, model):
        """The model itself, or its multi-worker wrapper (keras#20585)."""
        from keras_distill.distribute import MultiWorkerModel
        from keras_distill.distribute import in_multi_worker_mode

        if in_multi_worker_mode(self.strategy):
            return MultiWorkerModel(model)
        return model

    def _train(self, name, trainer, model, epochs, **extra):
        """Fits `trainer`, saves `model` as `<name>.keras`, records it."""
        role = "teacher" if name == "teacher" else "student"
        callbacks = []
        if self.config.backup_dir:
            import keras

            backup = self.backup_dir(name)
            if os.path.isdir(backup) and os.listdir(backup):
                self.log(f"[{name}] resuming from the backup in {backup}")
            callbacks.append(keras.callbacks.BackupAndRestore(backup))
        start = time.perf_counter()
        history = self._fit(
            role,
            trainer,
            epochs,
            validation_data=self.data.validation,
            callbacks=callbacks,
        )
        seconds = time.perf_counter() - start
        save_model(model, self.file(f"{name}.keras"))
        self._record(name, model, history.history, seconds, **extra)
        return model

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

    def _fit(self, role, trainer, epochs, callbacks=(), **kwargs):
        """Fits `trainer` on a fresh pipeline keyed by the epoch.

        The pipeline's order and shifts follow the epoch of `fit`
        (`keras_distill.callbacks.ResumableData`), so a phase resumed
        from a backup at epoch k reads epoch k's batches.
        """
        from keras_distill.callbacks import ResumableData

        resumable = ResumableData()
        with resumable:
            train = self.train_dataset(role)
        return trainer.fit(
            train,
            epochs=epochs,
            verbose=self.verbose,
            shuffle=False,  # the pipeline shuffles, seeded
            callbacks=[*callbacks, resumable],
            **kwargs,
        )

    def evaluate(self):
        """Evaluates every trained model of the run on the test split.

        Returns:
            The updated metrics dict (also written to `metrics.json`).
        """
        from keras_distill.app import robustness

        metrics = self.metrics()
        arrays = self.data.arrays
        for name in ("teacher", "scratch", "student"):
            if not os.path.exists(self.file(f"{name}.keras")):
                continue
            model = self.load(name)
            logits = predict(model, arrays.x_test)
            errors = int(np.sum(logits.argmax(-1) != arrays.y_test))
            entry = metrics.setdefault(name, {})
            entry.update(
                test_examples=int(len(arrays.y_test)),
                errors=errors,
                accuracy=1.0 - errors / len(arrays.y_test),
                params=int(model.count_params()),
                keras_bytes=os.path.getsize(self.file(f"{name}.keras")),
                robustness=robustness.evaluate(
                    model, arrays.x_test, arrays.y_test, seed=self.config.seed
                ),
            )
            self.log(
                f"[evaluate] {name}: accuracy {entry['accuracy']:.4f} "
                f"({errors} errors in {len(arrays.y_test)})"
            )
        self._write_metrics(metrics)
        return metrics

    def export(self, modes=None):
        """Exports the distilled student, and the teacher and the student
        from scratch in float32.

        Args:
            modes: TFLite variants among `float32`, `float16`, `dynamic`,
                `int8`. Defaults to the config's `quantize`.

        Returns:
            The dict of reports written under `tflite` in `metrics.json`.
        """
        from keras_distill import export

        modes = modes or self.config.quantize
        arrays = self.data.arrays
        check = (arrays.x_test, arrays.y_test)
        metrics = self.metrics()
        reports = metrics.setdefault("tflite", {})
        targets = [("student", m) for m in modes]
        # Every other model in float32, so the size chart compares files
        # of one format.
        for other in ("scratch", "teacher"):
            if os.path.exists(self.file(f"{other}.keras")):
                targets.insert(0, (other, "float32"))
        for name, mode in targets:
            model = self.load(name)
            suffix = "" if mode == "float32" else f"_{mode}"
            path = self.file(f"{name}{suffix}.tflite")
            self.log(f"[export] {name} {mode} -> {path}")
            report = export.tflite(
                model,
                path,
                quantize=None if mode == "float32" else mode,
                representative_data=arrays.x_train,
                check_data=check,
            )
            entry = report.to_dict()
            entry["path"] = os.path.basename(path)
            reports[f"{name}_{mode}"] = entry
        self._write_metrics(metrics)
        return reports

    def report(self):
        """Writes `report.md` and the PNG plots; returns the table text."""
        from keras_distill.app import report

        return report.write(self)

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
