"""A run's configuration: the command's choices, `RunConfig` and its checks.

Readable without TensorFlow or Keras: `keras-distill --help` states these
choices, and a config (a file, the flags) is checked with the standard
library alone; only a config that names distillation losses loads Keras,
to find them in the registry. `keras_distill.app.run` and the model zoo
use the same names. `read_config_file` reads a YAML file with the `app`
extra's `yaml`.
"""

import dataclasses
import hashlib
import json
import os

from keras_distill import _defaults as defaults
from keras_distill._utils import optional_import

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
# recipes' own defaults (`keras_distill._defaults`).
RECIPE_DEFAULTS = {
    "kd": {"temperature": 4.0, "alpha": 0.1},
    "reverse": dict(defaults.REVERSE),
    "born-again": dict(defaults.BORN_AGAIN),
    "mutual": dict(defaults.MUTUAL),
}


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
            if getattr(self, field) not in MODELS:
                fail(field, f"one of {sorted(MODELS)}")
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
            # Here, not at the top: the loss registry loads Keras, which a
            # config without losses (and `--help`) does without.
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
