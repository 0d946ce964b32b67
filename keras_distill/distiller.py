"""The `Distiller`: a `keras.Model` that trains a student from a teacher."""

import inspect

import keras
import tensorflow as tf

from keras_distill import _binding as binding
from keras_distill import _checks as checks
from keras_distill import _hub as hub
from keras_distill import _keras_internals as internals
from keras_distill import _keras_io as keras_io
from keras_distill import _nan_guard as nan_guard
from keras_distill import _objective as objective
from keras_distill import _references as references
from keras_distill import _validation as validation
from keras_distill import _views as views
from keras_distill import on_policy as generations
from keras_distill.augment import check_augment
from keras_distill.distribute import MultiWorkerBuild
from keras_distill.distribute import multi_worker_logs
from keras_distill.distribute import replica_share
from keras_distill.losses.base import as_float

# The constructor arguments saved as Keras objects.
_SERIALIZED = (
    "teacher",
    "student",
    "distillation_losses",
    "augment",
    "teacher_preprocessing",
    "generation",
)


@keras.saving.register_keras_serializable(package="keras_distill")
class Distiller(MultiWorkerBuild, keras.Model):
    """Trains a student model to match a frozen teacher.

    A `keras.Model`: `compile`, `fit`, `evaluate`, `predict`, callbacks
    and saving work as for any model; `call()` is the student's forward
    pass. Each training step runs the teacher once (`training=False`,
    outside the gradient tape) and the student once, and minimises
    `alpha · student_loss + (1 - alpha) · Σ_i w_i · distillation_i` plus
    the student's regularization losses. `student_loss` is `compile()`'s
    loss (sample and class weights as in `student.fit`); the distillation
    losses compare logits (a final softmax undone), reduced as the student
    loss is (per position, sample-weighted, over a Keras mask's valid
    positions). Only the student (and a loss' adapter) trains. `alpha`,
    the loss weights and the temperatures are variables a callback can
    assign without recompiling. `evaluate()` measures the student alone
    unless compiled with `evaluate_distillation=True`. Under a
    `tf.distribute` strategy, create and compile it in the scope.

    Args:
        teacher: A trained `keras.Model` (or an `Ensemble`), or None when
            no loss needs one (`TeacherFreeKD`). Logits or a softmax head
            (detected). An unbuilt model is built on the first batch.
        student: The `keras.Model` to train, built or not (feature losses
            need named layers). A softmax head is detected as for the
            teacher; the supervised loss and `predict` keep its outputs.
        distillation_losses: A `keras_distill.losses.DistillationLoss`, a
            registered name, a `keras.distillation` loss, or a list of
            these. Defaults to `LogitsDistillation(temperature=4.0)`.
        distillation_loss_weights: One non-negative float per loss.
            Defaults to 1.0 each.
        student_loss_weight: `alpha` in [0, 1], 0.5 by default (0: no labels).
        augment: Optional `keras_distill.augment.ConsistentAugment` (or a
            list of layers) applied to each training batch before both
            models run (function matching). Needs the teacher online.
        teacher_output: The name or index of the teacher output the losses
            compare, for a model with several outputs.
        student_output: The same for the student (its supervised loss
            still sees every output).
        teacher_output_type: What the compared output holds when the graph
            shows no softmax head: `"auto"` (logits; warns once if a batch
            looks like probabilities), `"logits"`, `"probabilities"` or
            `"log_probabilities"`.
        student_output_type: The same for the student.
        teacher_preprocessing: Optional layer or callable applied to the
            teacher's inputs only (e.g. `Resizing`, `Rescaling`).
        generation: Optional `keras_distill.on_policy.OnPolicy` or
            `SequenceLevel`: part of each batch of a causal language
            model continued by the student (or the teacher) inside the
            training step, compared on the generated tokens.
        allow_shared_layers: Whether the student may share layers (and
            their weights) with the teacher. Defaults to False: a shared
            layer is refused, naming it, because its weights would train
            with the student and change the teacher. With True (a trunk
            shared on purpose, as in self-distillation), the shared weights
            train with the student and the teacher changes with them.
        name: The model's name. Defaults to `"distiller"`.
        **kwargs: Passed on to `keras.Model`.

    Raises:
        ValueError: If an argument is invalid or the models do not suit
            the losses (class counts, input shapes, several outputs and
            no choice); the message says how to fix it.
        RuntimeError: If Keras does not run on the TensorFlow backend.

    Example:

    ```python
    distiller = keras_distill.Distiller(
        teacher,
        student,
        keras_distill.losses.LogitsDistillation(temperature=4.0),
        student_loss_weight=0.1,
    )
    distiller.compile(
        "adam",
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    distiller.fit(x_train, y_train, epochs=5)
    distiller.student.save("student.keras")
    ```
    """

    def __init__(
        self,
        teacher,
        student,
        distillation_losses=None,
        distillation_loss_weights=None,
        student_loss_weight=0.5,
        augment=None,
        teacher_output=None,
        student_output=None,
        teacher_output_type="auto",
        student_output_type="auto",
        teacher_preprocessing=None,
        allow_shared_layers=False,
        generation=None,
        name="distiller",
        **kwargs,
    ):
        validation.check_backend()
        super().__init__(name=name, **kwargs)
        validation.check_teacher_and_student(teacher, student)
        alpha = validation.check_fraction(
            "student_loss_weight", student_loss_weight
        )
        self.allow_shared_layers = bool(allow_shared_layers)
        validation.check_shared_layers(
            teacher, student, self.allow_shared_layers
        )
        self.teacher = teacher
        self.student = student
        self.augment = check_augment(augment)
        self.generation = generations.check_generation(generation)
        validation.check_generation_alone(self.augment, self.generation)
        self.teacher_output = teacher_output
        self.student_output = student_output
        self.teacher_output_type = validation.check_output_type(
            "teacher", teacher_output_type
        )
        self.student_output_type = validation.check_output_type(
            "student", student_output_type
        )
        self.teacher_preprocessing = validation.check_preprocessing(
            teacher_preprocessing
        )
        self._student_loss_weight = binding.scalar_weight(
            self, alpha, "student_loss_weight"
        )
        self._evaluate_distillation = False
        self._nan_policy = "raise"
        self._loss_layers = []
        self._student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self._distillation_loss_tracker = keras.metrics.Mean(
            name="distillation_loss"
        )
        # Not tracked by Keras (saved through the config): the losses,
        # their variables, the views; set by `_set_losses`, `_bind_views`.
        self._untracked(
            _distill_losses=[],
            _weight_variables=[],
            _loss_variables=[],
            _needs_teacher=False,
            _teacher_view=None,
            _student_view=None,
        )
        self._set_losses(distillation_losses, distillation_loss_weights)
        self.built = self._student_view is not None

    # Losses and the views of the models they read.

    def _untracked(self, **values):
        for attribute, value in values.items():
            object.__setattr__(self, attribute, value)

    def _set_losses(self, distillation_losses, weights):
        for variable in self._loss_variables:  # those of the losses replaced
            internals.untrack_variable(self, variable)
        bound = binding.bind_losses(self, distillation_losses, weights)
        self._untracked(
            _distill_losses=bound.losses,
            _weight_variables=bound.weight_variables,
            _loss_variables=bound.loss_variables,
            _needs_teacher=bound.needs_teacher,
        )
        self.train_function = self.test_function = None
        if self.student.built and (self.teacher is None or self.teacher.built):
            self._bind_views()

    def _bind_views(self):
        teacher_view, student_view, layers = binding.bind_views(
            self.teacher,
            self.student,
            self._distill_losses,
            (self.teacher_output, self.student_output),
            (self.teacher_output_type, self.student_output_type),
            self.teacher_preprocessing,
        )
        self._untracked(_teacher_view=teacher_view, _student_view=student_view)
        self._loss_layers.clear()  # a tracked list: its layers are saved
        self._loss_layers.extend(layers)
        if hasattr(self.student, "output_names"):
            self.output_names = self.student.output_names

    def _build_on(self, x):
        """Builds unbuilt models on the first batch of `x`, then the views."""
        if self._student_view is None:
            with self.distribute_strategy.scope():
                binding.build_models(
                    self.teacher, self.student, x, self.teacher_preprocessing
                )
                validation.check_shared_layers(
                    self.teacher, self.student, self.allow_shared_layers
                )
                self._bind_views()
            self.built = True

    def _checked(self, method, args, kwargs):
        """`keras.Model.<method>`'s arguments bound, raw KerasHub data
        preprocessed, the data checked, unbuilt models built and (for
        `fit` and `evaluate`) undeclared outputs probed once."""
        signature = inspect.signature(getattr(keras.Model, method))
        bound = signature.bind(self, *args, **kwargs)
        hub.preprocess_arguments(self.student, bound.arguments)
        x, y = bound.arguments.get("x"), bound.arguments.get("y")
        checks.check_data(method, x, y, self.student, self.augment)
        if x is not None:
            self._build_on(x)
            if method != "predict":
                checks.probe_outputs(
                    self._teacher_view,
                    self._student_view,
                    x,
                    self.teacher_preprocessing,
                )
        return bound

    def _for_teacher(self, x):
        if self.teacher_preprocessing is None:
            return x
        return self.teacher_preprocessing(x)

    # `keras.distillation`'s names for the two views. Nothing here reads
    # them, but Keras' own distiller tests (run by tests/test_keras_suite.py)
    # do: keep them.
    @property
    def _teacher_feature_extractor(self):
        """The teacher's functional view (`keras.distillation`'s name)."""
        view = self._teacher_view
        return None if view is None else view._functional

    @property
    def _student_feature_extractor(self):
        """The student's functional view (`keras.distillation`'s name)."""
        view = self._student_view
        return None if view is None else view._functional

    @property
    def distillation_losses(self):
        """The list of `keras_distill.losses.DistillationLoss` in use."""
        return list(self._distill_losses)

    @property
    def student_loss_weight(self):
        """`alpha`, the weight of the supervised loss (a float in [0, 1])."""
        return as_float(self._student_loss_weight)

    @student_loss_weight.setter
    def student_loss_weight(self, value):
        value = validation.check_fraction("student_loss_weight", value)
        self._student_loss_weight.assign(value)

    @property
    def distillation_loss_weights(self):
        """The weight of each distillation loss, as a list of floats."""
        return [as_float(v) for v in self._weight_variables]

    @distillation_loss_weights.setter
    def distillation_loss_weights(self, weights):
        weights = validation.check_weights(weights, len(self._weight_variables))
        for variable, weight in zip(self._weight_variables, weights):
            variable.assign(weight)

    @property
    def temperature(self):
        """The temperature of the first loss that has one, or None.
        Assigning it sets the temperature of every loss that has one."""
        return binding.temperature(self._distill_losses)

    @temperature.setter
    def temperature(self, value):
        binding.set_temperature(self._distill_losses, value)

    @property
    def trainable_weights(self):
        """The student's trainable weights and those of the losses' own
        layers; never the teacher's."""
        if not self.trainable:
            return []
        return binding.trainable_weights(self.student, self._distill_losses)

    @property
    def trainable_variables(self):
        return self.trainable_weights

    @property
    def non_trainable_weights(self):
        trainable = {id(w) for w in self.trainable_weights}
        return [w for w in self.weights if id(w) not in trainable]

    @property
    def non_trainable_variables(self):
        trainable = {id(w) for w in self.trainable_weights}
        return [v for v in self.variables if id(v) not in trainable]

    # Compile.

    def compile(
        self,
        optimizer="rmsprop",
        loss=None,
        metrics=None,
        *,
        evaluate_distillation=False,
        nan_policy="raise",
        **kwargs,
    ):
        """Configures the distiller for training.

        Takes `keras.Model.compile`'s arguments, which apply to the student
        (`loss` is its supervised loss, `metrics` are computed on its
        predictions), and the keras.io Distiller example's keywords
        `student_loss_fn`, `distillation_loss_fn`, `alpha` and
        `temperature`, with the same meaning (`keras_distill._keras_io`).

        Args:
            optimizer: Optimizer name or instance, for the student.
            loss: The student's supervised loss (or a structure matching
                its outputs). `None` only when `student_loss_weight` is 0.
            metrics: Metrics on the student's predictions.
            evaluate_distillation: If True, `evaluate()` also runs the
                teacher, reports `distillation_loss`, and its `loss` is the
                training objective. Defaults to False.
            nan_policy: `"raise"` (the default): `fit` stops with a
                `keras_distill.NonFiniteLossError` naming the term
                once the loss is not finite; `"ignore"`: train on.
            **kwargs: The keras.io keywords, and other `keras.Model.compile`
                arguments.

        Raises:
            ValueError: If a value is invalid, or `loss` is missing while
                `student_loss_weight` is above 0.
        """
        validation.check_bool("evaluate_distillation", evaluate_distillation)
        validation.check_nan_policy(nan_policy)
        new = keras_io.translate(self._distill_losses, loss, kwargs)
        if new.student_loss_weight is not None:
            self.student_loss_weight = new.student_loss_weight
        if new.distillation_losses is not None:
            self._set_losses(new.distillation_losses, None)
        if new.temperature is not None:
            self.temperature = new.temperature
        validation.check_supervised_loss(new.loss, self.student_loss_weight)
        super().compile(
            optimizer=optimizer, loss=new.loss, metrics=metrics, **kwargs
        )
        self._evaluate_distillation = evaluate_distillation
        self._nan_policy = nan_policy
        internals.set_compile_option(
            self, "evaluate_distillation", evaluate_distillation
        )
        internals.set_compile_option(self, "nan_policy", nan_policy)

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(dict(config))
        self.compile(**config)
        if self.optimizer is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    # Forward passes and losses.

    def call(self, inputs, training=None):
        """The student's forward pass."""
        inputs, _ = checks.split_cached(inputs)
        return self.student(inputs, training=training)

    def _teacher_outputs(self, x, cached=None):
        view = self._teacher_view
        if view is None or not self._needs_teacher:
            return None
        if cached is None:  # online; in top-k form if `generation` asks
            outputs = view(self._for_teacher(x), training=False)
            return generations.online(self.generation, outputs, self)
        losses, classes = self._distill_losses, self._student_view.classes()
        cached = checks.check_cache_serves(view, losses, cached, classes)
        return {views.LOGITS: view.logits(cached), views.MASK: None}

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        """What `student.compute_loss` returns: the supervised loss plus the
        regularization losses (`train_step` adds the distillation terms)."""
        del x, training
        supervised = self._supervised_loss(y, y_pred, sample_weight)
        return supervised + self._regularization_loss()

    def _supervised_loss(self, y, y_pred, sample_weight, mix=(None, None)):
        compiled = internals.compile_loss(self)
        return objective.supervised_loss(
            compiled, y, y_pred, sample_weight, mix
        )

    def _regularization_loss(self):
        return objective.regularization_loss(self.student, self._distill_losses)

    def _objective(
        self, x, y, sample_weight, teacher_outputs, training, mix, w=None
    ):
        """The student's forward pass and every loss term (`w`: the
        distillation losses' own weights, if not `sample_weight`)."""
        student_outputs = self._student_view(x, training=training)
        y_pred = student_outputs[views.OUTPUT]
        supervised = self._supervised_loss(y, y_pred, sample_weight, mix)
        distillation = objective.distillation_loss(
            self._distill_losses,
            self._weight_variables,
            teacher_outputs,
            student_outputs,
            y,
            sample_weight if w is None else w,
        )
        alpha = self._student_loss_weight
        total = (
            alpha * supervised
            + (1.0 - alpha) * replica_share(distillation)
            + self._regularization_loss()
        )
        return y_pred, supervised, distillation, total

    # Steps.

    def _logs(self, x, y, y_pred, sample_weight, terms):
        """Updates the loss trackers and the metrics; returns the logs."""
        trackers = (
            internals.loss_tracker(self),
            self._student_loss_tracker,
            self._distillation_loss_tracker,
        )
        objective.update_trackers(trackers, x, terms)
        if y is not None:
            logs = self.compute_metrics(x, y, y_pred, sample_weight)
        else:
            logs = self.get_metrics_result()
        logs["total_loss"] = logs["loss"]  # keras.distillation's name
        if terms[1] is None:
            logs.pop("distillation_loss", None)
        return multi_worker_logs(logs)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        checks.check_labels_given(y, internals.compile_loss(self))
        x, cached = checks.split_cached(x)
        mix = (None, None)
        if self.augment is not None:
            if cached is not None:
                raise ValueError(checks.AUGMENT_WITH_CACHE)
            x, *mix = self.augment.augment(x)
        w = None  # the distillation losses' weights, if their own
        if self.generation is not None and self.generation.fraction > 0:
            x, y, sample_weight, w = self._generated(
                x, y, sample_weight, cached
            )
        guard = self._nan_policy == "raise"
        # Put back if the loss is not finite: what the forward pass moves.
        moved = self.student.non_trainable_weights if guard else []
        saved = nan_guard.snapshot(moved)
        teacher_outputs = self._teacher_outputs(x, cached)
        with tf.GradientTape() as tape:
            y_pred, supervised, distillation, total = self._objective(
                x, y, sample_weight, teacher_outputs, True, mix, w
            )
            scaled = self.optimizer.scale_loss(total)
        variables = self.trainable_weights
        gradients = tape.gradient(scaled, variables)
        if not guard:
            self.optimizer.apply_gradients(zip(gradients, variables))
        else:  # XLA drops in-graph checks: the guard reads the epoch's loss
            supervised, distillation = nan_guard.apply_if_finite(
                self.optimizer,
                zip(gradients, variables),
                (total, supervised, distillation),
                saved,
                check=not self.jit_compile,
            )
        terms = (supervised, distillation, total)
        return self._logs(x, y, y_pred, sample_weight, terms)

    def _generated(self, x, y, sample_weight, cached):
        """The batch with its first rows continued (`self.generation`)."""
        self.generation.refuse_checked(cached, self._distill_losses)
        teacher = self.generation.generator == "teacher"
        view = self._teacher_view if teacher else self._student_view
        prepare = self._for_teacher if teacher else (lambda inputs: inputs)
        logits = lambda inputs: view(prepare(inputs))[views.LOGITS]  # noqa
        step = self.optimizer.iterations
        seed = generations.training_seed(self.generation.seed, step)
        return self.generation.batch(logits, x, y, sample_weight, seed)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x, cached = checks.split_cached(x)
        if self._evaluate_distillation:
            teacher_outputs = self._teacher_outputs(x, cached)
            y_pred, *terms = self._objective(
                x, y, sample_weight, teacher_outputs, False, (None, None)
            )
        else:  # the student alone, as `student.evaluate`
            y_pred = self.student(x, training=False)
            supervised = self._supervised_loss(y, y_pred, sample_weight)
            terms = (supervised, None, supervised + self._regularization_loss())
        return self._logs(x, y, y_pred, sample_weight, terms)

    # fit / evaluate / predict: the data checked first.

    def fit(self, *args, **kwargs):
        """Trains the student; the same arguments as `keras.Model.fit`.

        The data is checked against the student first; losses that change
        with the epoch get each epoch's index; under
        `compile(nan_policy="raise")` a non-finite loss stops training
        with `keras_distill.NonFiniteLossError`.

        Returns:
            A `keras.callbacks.History`.
        """
        bound = self._checked("fit", args, kwargs)
        if self.optimizer is not None and not self.optimizer.built:
            # Not in the step's first trace: inside the NaN guard's `cond`
            # its variables double that trace's time.
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)
        if "shuffle" not in bound.arguments and isinstance(
            bound.arguments.get("x"), tf.data.Dataset
        ):  # Keras warns when it is left on for a dataset
            bound.arguments["shuffle"] = False
        with checks.guarded_fit(
            bound.arguments, self._distill_losses, self._nan_policy
        ):
            return super().fit(*bound.args[1:], **bound.kwargs)

    def evaluate(self, *args, **kwargs):
        """Evaluates the student; `keras.Model.evaluate`'s arguments.
        The data is checked as in `fit` first."""
        bound = self._checked("evaluate", args, kwargs)
        return super().evaluate(*bound.args[1:], **bound.kwargs)

    def predict(self, *args, **kwargs):
        """The student's predictions; `keras.Model.predict`'s arguments.
        The inputs are checked as in `fit` first."""
        bound = self._checked("predict", args, kwargs)
        return super().predict(*bound.args[1:], **bound.kwargs)

    # Serialization.

    def get_config(self):
        """Returns the constructor arguments, teacher and student included."""
        config = {
            "name": self.name,
            "trainable": self.trainable,
            "distillation_loss_weights": self.distillation_loss_weights,
            "student_loss_weight": self.student_loss_weight,
            "allow_shared_layers": self.allow_shared_layers,
        }
        for role in ("teacher", "student"):
            config[f"{role}_output"] = getattr(self, f"{role}_output")
            config[f"{role}_output_type"] = getattr(self, f"{role}_output_type")
        return references.serialized(config, self, _SERIALIZED)

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """Builds a distiller from the dict `get_config` returned."""
        config = references.deserialized(config, _SERIALIZED, custom_objects)
        return cls(**config)
