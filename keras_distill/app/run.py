"""A distillation run: its phases, over its run directory.

Each phase (`train-teacher`, `distill`, `scratch`, `evaluate`, `export`,
`report`) reads what earlier phases wrote in the run directory
(`keras_distill.app.rundir`), so the CLI can run them one at a time or all
at once. The configuration is `keras_distill.app.config.RunConfig`.
"""

import functools
import os
import shutil
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from keras_distill import export
from keras_distill import losses as losses_module
from keras_distill import quantization
from keras_distill import recipes
from keras_distill._utils import save_model
from keras_distill.app import datasets as data
from keras_distill.app import folders
from keras_distill.app import models
from keras_distill.app import robustness
from keras_distill.app.config import file_digest
from keras_distill.app.config import model_kind
from keras_distill.app.report import write as write_report
from keras_distill.app.run_data import RunData
from keras_distill.app.rundir import RunDirectory
from keras_distill.callbacks import ResumableData
from keras_distill.distiller import Distiller
from keras_distill.distribute import MultiWorkerModel
from keras_distill.distribute import in_multi_worker_mode


def _in_scope(phase):
    """Runs a training phase inside the run's distribution strategy."""

    @functools.wraps(phase)
    def wrapper(self, *args, **kwargs):
        with self.strategy.scope():
            return phase(self, *args, **kwargs)

    return wrapper


def check_data(config):
    """Loads the run's data as arrays, to refuse a bad source early.

    NumPy only: no TensorFlow op runs, so a multi-worker strategy can
    still be created afterwards. The bundled datasets are cached, so the
    run's own loading costs nothing more.

    Raises:
        ValueError: For an unknown source or invalid content.
        FileNotFoundError: When the data is not on disk.
    """
    if os.path.isdir(config.dataset):  # streamed: scanned, not loaded
        folders.check(config.dataset, config.test_dataset)
        return
    data.load_arrays(
        config.dataset,
        validation_split=config.validation_split,
        seed=config.seed,
        data_dir=config.data_dir,
    )


class Run(RunData, RunDirectory):
    """The phases of one distillation job, over one run directory.

    The directory, its config, models and metrics are those of
    `keras_distill.app.rundir.RunDirectory`.

    Args:
        path: The run directory (created if needed).
        config: A `keras_distill.app.config.RunConfig`. Defaults to the
            directory's `config.json` when there is one, else to
            `RunConfig()`.
        verbose: Keras' `verbose` for training (0, 1 or 2); None picks 1
            on a terminal and 2 (a line per epoch) elsewhere.
        log: A function that prints a progress line.

    Raises:
        OSError: If the run directory cannot be created or written to.

    Example:

    ```python
    run = keras_distill.app.run.Run(
        "saved_models/mine", keras_distill.app.config.RunConfig(epochs=5)
    )
    run.train_teacher()
    run.distill()
    run.scratch()
    run.evaluate()
    ```
    """

    def __init__(self, path, config=None, verbose=None, log=print):
        super().__init__(path, config)
        if verbose is None:
            verbose = 1 if sys.stdout.isatty() else 2
        self.verbose = verbose
        self.log = log
        self._data = None
        self._strategy = None

    @property
    def strategy(self):
        """The run's `tf.distribute.Strategy` (created once)."""
        if self._strategy is None:
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

    # -- data and models -----------------------------------------------------

    def _optimizer(self):
        c = self.config
        classes = {
            "adam": keras.optimizers.Adam,
            "adamw": keras.optimizers.AdamW,
            "sgd": keras.optimizers.SGD,
            "rmsprop": keras.optimizers.RMSprop,
        }
        return classes[c.optimizer](learning_rate=c.learning_rate)

    def _build(self, role, seed=None):
        c = self.config
        keras.utils.set_random_seed(c.seed)
        if seed is None:
            seed = c.seed if role == "teacher" else c.seed + 1
        return models.build(
            c.architecture(role),
            self.data.input_shape,
            self.data.num_classes,
            seed=seed,
        )

    def _teacher_preprocessing(self, teacher):
        c = self.config
        return models.teacher_preprocessing(
            teacher,
            self.data.input_shape,
            c.teacher_preprocessing,
            c.teacher_scale,
        )

    def on_data(self, name, model):
        """A model that takes the run's inputs: the teacher behind its
        preprocessing when it needs one."""
        if name != "teacher":
            return model
        preprocessing = self._teacher_preprocessing(model)
        if preprocessing is None:
            return model
        inputs = keras.Input(tuple(self.data.input_shape))
        return keras.Model(inputs, model(preprocessing(inputs)), name="teacher")

    # -- a trained teacher given as a file -----------------------------------

    def _teacher_file(self):
        """The user's trained teacher file, or None (the run trains it)."""
        reference = self.config.architecture("teacher")
        return reference if model_kind(reference) == "file" else None

    def _check_teacher_file(self):
        """Refuses to go on when the user's teacher file changed since the
        run recorded it."""
        path = self._teacher_file()
        recorded = self.metrics().get("teacher", {}).get("sha256")
        if path is None or recorded is None:
            return
        digest = file_digest(path)
        if digest != recorded:
            raise ValueError(
                f"The teacher file {path!r} changed since this run recorded "
                f"it (sha256 {recorded[:12]}... then, {digest[:12]}... now)."
                " Expected the same trained teacher for every phase of a "
                "run. Restore the file, or start a new run directory."
            )

    def load(self, name):
        if name == "teacher":
            self._check_teacher_file()
        return super().load(name)

    def _compile_args(self):
        return dict(
            optimizer=self._optimizer(),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )

    # -- phases --------------------------------------------------------------

    @_in_scope
    def train_teacher(self, force=False):
        """Trains the teacher, or reuses the one trained with this config.

        Args:
            force: Retrain even if a matching teacher exists.

        Returns:
            The teacher `keras.Model`.
        """
        if self._teacher_file() is not None:
            return self._use_teacher_file()
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
        self._train(
            "teacher", trainer, teacher, epochs, fingerprint=fingerprint
        )
        return teacher

    def _use_teacher_file(self):
        """The user's trained teacher, used as it is: never trained here,
        never written to; the run keeps a byte copy as `teacher.keras`
        and records the file's path and SHA-256."""
        path = self._teacher_file()
        self._check_teacher_file()
        digest = file_digest(path)
        teacher = keras.models.load_model(path)
        self.log(
            f"[teacher] using the trained teacher {path} as it is "
            f"({teacher.count_params():,} parameters, sha256 "
            f"{digest[:12]}...): not trained by this run"
        )
        shutil.copyfile(path, self.file("teacher.keras"))
        metrics = self.metrics()
        metrics["teacher"] = dict(
            metrics.get("teacher", {}),
            source=os.path.abspath(path),
            sha256=digest,
            trained_by_run=False,
            params=int(teacher.count_params()),
        )
        self._write_metrics(metrics)
        return teacher

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
        self._train("student", distiller, student, c.epochs)
        if c.quantization_aware_epochs:
            self._quantization_aware(teacher, student)
        return student

    def _quantization_aware(self, teacher, student):
        """Distils the int8 quantization-aware twin of a copy of the
        distilled student; saves it as `student_qat.keras`."""
        epochs = self.config.quantization_aware_epochs
        model = keras.models.clone_model(student)  # in the run's scope
        model.set_weights(student.get_weights())
        twin = quantization.quantization_aware(model)
        distiller = self._distiller(teacher, twin)
        self.log(
            f"[distill] int8 quantization-aware, {epochs} epochs "
            "(ranges frozen for the last)"
        )
        freeze = quantization.FreezeRanges(twin, epoch=epochs - 1)
        self._train("student_qat", distiller, twin, epochs, callbacks=[freeze])
        return twin

    def _distiller(self, teacher, student):
        c = self.config.resolved()
        distiller = Distiller(
            teacher,
            student,
            self.distillation_losses(),
            distillation_loss_weights=c.loss_weights,
            student_loss_weight=c.alpha,
            augment=self.consistent_augment(),
            teacher_preprocessing=self._teacher_preprocessing(teacher),
        )
        distiller.compile(**self._compile_args())
        return distiller

    def _born_again(self, teacher):
        """Born-again generations (`keras_distill.recipes.born_again`) from
        the run's teacher, with the run's losses, optimizer and pipelines;
        the last generation is the run's student."""
        c = self.config.resolved()
        numbers = iter(range(1, c.generations + 1))
        errors = []

        def build():
            student = self._build("student")
            k = next(numbers)
            self.log(
                f"[distill] born-again generation {k}/{c.generations}: "
                f"{c.teacher} from generation {k - 1}, T={c.temperature}, "
                f"alpha={c.alpha}, {c.epochs} epochs"
            )
            return student

        def fit(distiller, student, k):
            # Only the last generation is saved, validated and recorded.
            if k < c.generations:
                return self._fit("student", distiller, c.epochs)
            return self._train("student", distiller, student, c.epochs)

        def count_errors(k, generation):
            if k == 0:
                return  # the run's teacher
            predicted, labels = self.test_predictions(generation.model)
            errors.append(int(np.sum(predicted != labels)))
            self.log(f"[distill] generation {k}: {errors[-1]} errors")

        result = recipes.born_again(
            build,
            None,  # `fit` feeds every generation
            generations=c.generations,
            epochs=c.epochs,
            temperature=c.temperature,
            alpha=c.alpha,
            teacher=teacher,
            distiller_fn=self._distiller,
            fit_fn=fit,
            on_generation=count_errors,
        )
        metrics = self.metrics()
        metrics["student"]["generation_errors"] = errors
        self._write_metrics(metrics)
        return result.generations[-1].model

    def _mutual(self):
        """Two students trained together; the first is the run's student."""
        c = self.config.resolved()
        student = self._build("student")
        peer = self._build("student", seed=c.seed + 2)  # another start
        peer.name = f"{peer.name}_peer"
        mutual = recipes.MutualLearning(
            [student, peer], temperature=c.temperature
        )
        args = self._compile_args()
        mutual.compile(args["optimizer"], args["loss"], args["metrics"])
        self.log(
            f"[distill] deep mutual learning of two {c.student} models, "
            f"T={c.temperature}, {c.epochs} epochs"
        )
        self._train("student", mutual, student, c.epochs)
        predicted, labels = self.test_predictions(peer)
        metrics = self.metrics()
        metrics["student"]["peer_errors"] = int(np.sum(predicted != labels))
        self._write_metrics(metrics)
        return student

    def distillation_losses(self):
        """The configured distillation losses, hints included."""
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
        self._train("scratch", trainer, student, c.epochs)
        return student

    def _trainer(self, model):
        """The model itself, or its multi-worker wrapper (keras#20585)."""
        if in_multi_worker_mode(self.strategy):
            return MultiWorkerModel(model)
        return model

    def _train(self, name, trainer, model, epochs, callbacks=(), **extra):
        """Fits `trainer`, saves `model` as `<name>.keras`, records it.

        Returns:
            The `keras.callbacks.History` of the fit.
        """
        role = "teacher" if name == "teacher" else "student"
        callbacks = list(callbacks)
        if self.config.backup_dir:
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
        return history

    def _fit(self, role, trainer, epochs, callbacks=(), **kwargs):
        """Fits `trainer` on a fresh pipeline keyed by the epoch.

        The pipeline's order and shifts follow the epoch of `fit`
        (`keras_distill.callbacks.ResumableData`), so a phase resumed
        from a backup at epoch k reads epoch k's batches.
        """
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
        metrics = self.metrics()
        x_sample, y_sample = self.test_arrays()
        for name in ("teacher", "scratch", "student", "student_qat"):
            if not os.path.exists(self.file(f"{name}.keras")):
                continue
            model = self.load(name)
            params = int(model.count_params())
            model = self.on_data(name, model)
            predicted, labels = self.test_predictions(model)
            errors = int(np.sum(predicted != labels))
            entry = metrics.setdefault(name, {})
            entry.update(
                test_examples=int(len(labels)),
                errors=errors,
                accuracy=1.0 - errors / len(labels),
                params=params,
                keras_bytes=os.path.getsize(self.file(f"{name}.keras")),
            )
            if len(np.shape(x_sample)) == 4:  # images only
                entry["robustness"] = robustness.evaluate(
                    model, x_sample, y_sample, seed=self.config.seed
                )
            self.log(
                f"[evaluate] {name}: accuracy {entry['accuracy']:.4f} "
                f"({errors} errors in {len(labels)})"
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
        modes = modes or self.config.quantize
        check = self.test_arrays()
        representative = self.train_sample()
        metrics = self.metrics()
        reports = metrics.setdefault("tflite", {})
        targets = [("student", m) for m in modes]
        if os.path.exists(self.file("student_qat.keras")):
            targets.append(("student_qat", "int8"))
        # Every other model in float32, so the size chart compares files
        # of one format.
        for other in ("scratch", "teacher"):
            if os.path.exists(self.file(f"{other}.keras")):
                targets.insert(0, (other, "float32"))
        for name, mode in targets:
            model = self.on_data(name, self.load(name))
            suffix = "" if mode == "float32" else f"_{mode}"
            path = self.file(f"{name}{suffix}.tflite")
            self.log(f"[export] {name} {mode} -> {path}")
            report = export.tflite(
                model,
                path,
                quantize=None if mode == "float32" else mode,
                representative_data=representative,
                check_data=check,
            )
            entry = report.to_dict()
            entry["path"] = os.path.basename(path)
            reports[f"{name}_{mode}"] = entry
        self._write_metrics(metrics)
        return reports

    def report(self):
        """Writes `report.md` and the PNG plots; returns the table text."""
        return write_report(self)
