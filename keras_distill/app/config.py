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
import re

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
# A Python factory that returns a model: `package.module:function`.
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
MODEL_FORMS = (
    f"a zoo name (one of {sorted(MODELS)}), a saved `.keras` file, a "
    "factory `package.module:function` that returns a model, or a Keras "
    '{"class_name": ..., "config": ...} model config'
)
TEACHER_PREPROCESSING = ("auto", "none")


def model_kind(reference):
    """What a `teacher` / `student` reference names, without loading it.

    Args:
        reference: A zoo name, a path to a `.keras` file, a factory
            `package.module:function`, a Keras `{"class_name", "config"}`
            dict, or that dict as a JSON string.

    Returns:
        `"zoo"`, `"file"`, `"factory"` or `"config"`, or None for anything
        else (a missing file included).
    """
    if isinstance(reference, dict):
        ok = {"class_name", "config"} <= set(reference)
        return "config" if ok else None
    if not isinstance(reference, str):
        return None
    if reference.lstrip().startswith("{"):
        try:
            return model_kind(json.loads(reference))
        except ValueError:
            return None
    if reference in MODELS:
        return "zoo"
    if reference.endswith(".keras"):
        return "file" if os.path.isfile(reference) else None
    if _FACTORY.match(reference):
        return "factory"
    return None


def file_digest(path):
    """The SHA-256 of a file's bytes (a trained teacher's, to notice a
    change)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
        dataset: A data source (see `keras_distill.app.datasets.load`):
            a bundled name, `tfds:<name>`, a `.npz` file, or a folder of
            images or text files in class subfolders.
        data_dir: The TFDS data directory, for `tfds:<name>` datasets.
        test_dataset: A separate test folder (the same classes) for a
            folder dataset, or null: a stratified split from `seed`.
        image_size: `[height, width]` of a folder's images, or null: the
            student's input size (else the first image's).
        teacher: The teacher: a `keras_distill.app.zoo` name (trained by
            the run), a trained `.keras` file (used as it is, never
            retrained or overwritten; the run records its SHA-256 and
            refuses to go on if the file changes), a factory
            `package.module:function` returning a model (importable from
            the working directory), or a Keras `{"class_name", "config"}`
            model config (both trained by the run).
        student: The student, in the same forms. A `.keras` file starts
            from its weights (distilled and from scratch alike); the other
            forms start from the same fresh weights for both.
        teacher_preprocessing: `auto` (the default): when the teacher's
            input size differs from the student's, its inputs are resized
            (and grey images repeated to three channels); `none`: inputs
            go to the teacher as they are.
        teacher_scale: A factor applied to the teacher's inputs (for
            example 255 for a teacher trained on pixel values in 0..255
            while the data is in [0, 1]), or null.
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
        quantization_aware_epochs: Epochs of quantization-aware
            distillation after the float one (0, the default: none): the
            distilled student's int8 twin (`keras_distill.quantization`)
            learns from the teacher again, its ranges frozen for the last
            epoch, and is saved as `student_qat.keras`; `evaluate` and
            `export` (an int8 file, `student_qat_int8.tflite`) take it too.
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
    test_dataset: object = None
    image_size: object = None
    teacher: object = "cnn-medium"
    student: object = "mlp-compact"
    teacher_preprocessing: str = "auto"
    teacher_scale: object = None
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
    quantization_aware_epochs: int = 0

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
            value = getattr(self, field)
            if isinstance(value, str) and value.endswith(".keras"):
                if not os.path.isfile(value):
                    fail(field, f"an existing .keras file ({value} is not)")
            if model_kind(value) is None:
                fail(field, MODEL_FORMS)
            if isinstance(value, str) and value.lstrip().startswith("{"):
                setattr(self, field, json.loads(value))
        if self.teacher_preprocessing not in TEACHER_PREPROCESSING:
            fail("teacher_preprocessing", f"one of {TEACHER_PREPROCESSING}")
        if self.teacher_scale is not None and (
            not is_number(self.teacher_scale) or not self.teacher_scale > 0
        ):
            fail("teacher_scale", "a positive float or null")
        if self.image_size is not None and (
            not isinstance(self.image_size, (list, tuple))
            or len(self.image_size) != 2
            or not all(is_int(v) and v > 0 for v in self.image_size)
        ):
            fail("image_size", "[height, width], two positive ints, or null")
        if self.image_size is not None:
            self.image_size = list(self.image_size)
        if self.test_dataset is not None and (
            not isinstance(self.test_dataset, str)
            or not os.path.isdir(self.test_dataset)
            or not os.path.isdir(self.dataset)
        ):
            fail("test_dataset", "a folder, beside a folder `dataset`")
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
        if (
            not is_int(self.quantization_aware_epochs)
            or self.quantization_aware_epochs < 0
        ):
            fail("quantization_aware_epochs", "an int >= 0")
        if self.teacher_augment == "consistent":
            fail("teacher_augment", "'none' or 'shift'")
        if self.strategy not in STRATEGIES:
            fail("strategy", f"one of {list(STRATEGIES)}")
        if self.backup_dir is not None and (
            not isinstance(self.backup_dir, str) or not self.backup_dir
        ):
            fail("backup_dir", "a directory path or null")
        if not isinstance(self.dataset, str) or not self.dataset:
            fail("dataset", "a data source name, a .npz path or a folder")
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
        for key in ("test_dataset", "image_size", "teacher_preprocessing"):
            values[key] = getattr(self, key)
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
