"""The `Distiller`: a `keras.Model` that trains a student from a teacher."""

import copy
import inspect

import keras
from keras import ops

from keras_distill import _keras_internals as internals
from keras_distill import losses as losses_module
from keras_distill.checks import NonFiniteLossError
from keras_distill.checks import NonFiniteLossGuard
from keras_distill.checks import check_finite
from keras_distill.checks import check_inputs
from keras_distill.checks import check_labels
from keras_distill.checks import check_nan_policy
from keras_distill.checks import expected_inputs
from keras_distill.checks import non_finite_message
from keras_distill.checks import term_from_error
from keras_distill.distribute import MultiWorkerBuild
from keras_distill.distribute import multi_worker_logs
from keras_distill.distribute import replica_count
from keras_distill.distribute import replica_share
from keras_distill.losses.base import accepts_sample_weight
from keras_distill.losses.base import as_float
from keras_distill.losses.base import layer_names
from keras_distill.losses.base import merge_mask
from keras_distill.losses.compat import is_kl_divergence
from keras_distill.losses.logits import LogitsDistillation
from keras_distill.losses.logits import SoftTargetDistillation
from keras_distill.utils import input_shape
from keras_distill.validation import check_augment
from keras_distill.validation import check_backend
from keras_distill.validation import check_fraction
from keras_distill.validation import check_model
from keras_distill.validation import check_preprocessing
from keras_distill.validation import check_weights
from keras_distill.views import LOGITS
from keras_distill.views import MASK
from keras_distill.views import OUTPUT
from keras_distill.views import ModelView
from keras_distill.views import check_output_type
from keras_distill.views import keras_mask

_AUGMENT_WITH_CACHE = (
    "Invalid data for a Distiller with `augment`. Expected the teacher "
    "online: a teacher cache holds outputs for unaugmented inputs. "
    "Received: batches from a `TeacherCache`"
)


def _first_inputs(x):
    """A small batch of inputs from `fit`'s `x`, to build unbuilt models."""
    import numpy as np
    import tensorflow as tf

    if isinstance(x, (tf.data.Dataset, keras.utils.PyDataset)):
        if isinstance(x, tf.data.Dataset):
            x = next(iter(x.take(1)), None)
        else:
            x = x[0]
        if x is None:
            return None
        if isinstance(x, tuple):  # a batch of (x, y[, sample_weight])
            x = keras.utils.unpack_x_y_sample_weight(x)[0]
    x, _ = _split_cached(x)
    return keras.tree.map_structure(
        lambda a: a[:2] if isinstance(a, (np.ndarray, tf.Tensor)) else a, x
    )


def _classes(view):
    """The last axis of a view's chosen output, or None if unknown."""
    shape = view.logits_shape() if view is not None else None
    return shape[-1] if shape else None


def _output_classes(model):
    """The last axis of a single-output model's output, or None."""
    outputs = getattr(model, "outputs", None)
    if outputs and len(outputs) == 1:
        return outputs[0].shape[-1]
    return None


def _select(outputs, spec):
    """The logits (spec None), feature or list of features a loss reads."""
    if outputs is None:
        return None
    if spec is None:
        return outputs[LOGITS]
    if isinstance(spec, str):
        return outputs[spec]
    return [outputs[name] for name in spec]


def _is_dataset(x):
    import tensorflow as tf

    return isinstance(x, tf.data.Dataset)


def _split_cached(x):
    """`(inputs, cached teacher outputs or None)` from a batch's `x`.

    Batches from `keras_distill.teachers.TeacherCache.dataset` carry the
    teacher's outputs beside the inputs, in a dict.
    """
    from keras_distill.teachers import INPUT_KEY
    from keras_distill.teachers import TEACHER_KEY

    if isinstance(x, dict) and TEACHER_KEY in x and INPUT_KEY in x:
        return x[INPUT_KEY], x[TEACHER_KEY]
    return x, None


class _LossEpochHooks(keras.callbacks.Callback):
    """Calls `on_epoch_begin` of the losses that change with the epoch."""

    def __init__(self, losses):
        super().__init__()
        self._losses = losses

    def on_epoch_begin(self, epoch, logs=None):
        for loss in self._losses:
            loss.on_epoch_begin(epoch)


@keras.saving.register_keras_serializable(package="keras_distill")
class Distiller(MultiWorkerBuild, keras.Model):
    """Trains a student model to match a frozen teacher.

    A `Distiller` is a `keras.Model`: `compile`, `fit`, `evaluate`,
    `predict`, callbacks and saving work as for any model. `call()` is the
    student's forward pass, so `distiller.predict(x)` equals
    `distiller.student.predict(x)`.

    Each training step runs the teacher once (`training=False`, outside the
    gradient tape), runs the student once, and minimises

    ```
    loss = alpha · student_loss + (1 - alpha) · Σ_i w_i · distillation_i
           + the student's regularization losses
    ```

    where `student_loss` is the loss given to `compile()` (with
    `sample_weight` and `class_weight` applied exactly as in
    `student.fit`), `alpha` is `student_loss_weight` and `w_i` are
    `distillation_loss_weights`. The distillation losses compare logits
    (a final softmax undone) and are reduced as the student loss is: per
    position for sequences and dense predictions, weighted by the same
    sample weights, over the valid positions of a Keras mask. Only the
    student's weights (and those of any adapter a loss owns) are trained.

    The teacher is never modified: its weights, BatchNorm statistics and its
    `trainable` flag are left as they were. The distiller simply excludes
    the teacher's weights from `trainable_weights`.

    `alpha`, the loss weights and every loss' temperature are non-trainable
    variables: assign `distiller.student_loss_weight`,
    `distiller.distillation_loss_weights` or `distiller.temperature` (for
    example from a callback) and the next step uses the new value without
    recompiling.

    `evaluate()` measures the student alone, as a standalone model: it does
    not run the teacher, and its `loss` is the student's supervised loss
    (plus regularization), the number `student.evaluate` would give. Pass
    `evaluate_distillation=True` to `compile()` to also run the teacher in
    `evaluate()` and report `distillation_loss` and the training objective.

    Under a `tf.distribute` strategy, create and compile the distiller in
    the strategy's scope. Every loss term is scaled for the number of
    replicas the same way, so the gradients equal those of a one-device
    run on the same global batch.

    Args:
        teacher: A trained `keras.Model` (or an `Ensemble`), or None when
            no loss needs a teacher (`TeacherFreeKD`). Its outputs may be
            logits or end in a softmax (detected; the logits before it are
            used). An unbuilt model is built on the first batch.
        student: The `keras.Model` to train, built or not. Functional,
            Sequential and subclassed models are accepted (feature losses
            need named layers, so Functional or Sequential). A final
            softmax is detected as for the teacher; the supervised loss
            and `predict` keep the student's own outputs.
        distillation_losses: A `keras_distill.losses.DistillationLoss`, a
            registered name (see `keras_distill.losses.known_names()`), a
            `keras.distillation` loss, or a list of these. Defaults to
            `LogitsDistillation(temperature=4.0)`.
        distillation_loss_weights: One non-negative float per distillation
            loss. Defaults to 1.0 each.
        student_loss_weight: `alpha`, the weight of the supervised loss, in
            [0, 1]. Defaults to 0.5. With 0, labels are not needed.
        augment: Optional `keras_distill.augment.ConsistentAugment` (or a
            list of augmentation layers): applied once per training batch
            before the teacher and the student run, so both see the same
            input (function matching). With a `Mixup` layer the supervised
            loss mixes the labels with the same coefficient. Needs the
            teacher online (not a `TeacherCache`).
        teacher_output: For a teacher with several outputs (a list or a
            dict), the name or index of the one the distillation losses
            compare. Defaults to None (a single output).
        student_output: The same for the student; its supervised loss
            still sees every output (Keras' multi-output `compile`).
        teacher_output_type: What the teacher's compared output holds when
            no softmax head can be found in its graph (a subclassed model,
            a `keras.layers.TFSMLayer`): `"auto"` (the default: used as
            logits, with a one-time warning if a batch looks like
            probabilities), `"logits"`, `"probabilities"` (clipped at 1e-30
            and logged) or `"log_probabilities"`.
        student_output_type: The same for the student.
        teacher_preprocessing: Optional layer or callable applied to each
            batch before the teacher only (for example a `keras.Sequential`
            of `Resizing` and `Rescaling` for a teacher trained on another
            input size or scale). Saved with the distiller when it is a
            serializable layer.
        name: The model's name. Defaults to `"distiller"`.
        **kwargs: Passed on to `keras.Model`.

    Raises:
        ValueError: If an argument is invalid (not a `keras.Model`, the
            same model as teacher and student, class counts that differ
            for a logits loss, several outputs and no choice, weights out
            of range, an unknown loss name, input shapes that differ with
            no `teacher_preprocessing`).
        RuntimeError: If Keras does not run on the TensorFlow backend.

    Example:

    ```python
    distiller = keras_distill.Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=keras_distill.losses.LogitsDistillation(
            temperature=4.0
        ),
        student_loss_weight=0.1,
    )
    distiller.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
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
        name="distiller",
        **kwargs,
    ):
        check_backend()
        super().__init__(name=name, **kwargs)
        if teacher is not None:
            check_model("teacher", teacher)
        check_model("student", student)
        if teacher is student:
            raise ValueError(
                "Invalid value for argument `student`. Expected a model "
                "other than the teacher. Received: the same object as "
                f"teacher and student ({teacher.name!r})"
            )
        alpha = check_fraction("student_loss_weight", student_loss_weight)
        self.teacher = teacher
        self.student = student
        self.teacher_output = teacher_output
        self.student_output = student_output
        self.teacher_output_type = check_output_type(
            "teacher", teacher_output_type
        )
        self.student_output_type = check_output_type(
            "student", student_output_type
        )
        self.teacher_preprocessing = check_preprocessing(teacher_preprocessing)
        self._alpha = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(alpha),
            dtype="float32",
            trainable=False,
            autocast=False,
            name="student_loss_weight",
        )
        self._evaluate_distillation = False
        self._nan_policy = "raise"
        self.augment = check_augment(augment)
        self._loss_layers = []
        object.__setattr__(self, "_teacher_view", None)
        object.__setattr__(self, "_student_view", None)
        self._set_losses(distillation_losses, distillation_loss_weights)
        self._student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self._distillation_loss_tracker = keras.metrics.Mean(
            name="distillation_loss"
        )
        self.built = self._student_view is not None

    # ------------------------------------------------------------------
    # Losses, their variables and the views they read.

    def _set_losses(self, distillation_losses, weights):
        if distillation_losses is None:
            distillation_losses = [LogitsDistillation()]
        if not isinstance(distillation_losses, (list, tuple)):
            distillation_losses = [distillation_losses]
        if not distillation_losses:
            raise ValueError(
                "Invalid value for argument `distillation_losses`. Expected "
                "at least one distillation loss. Received: "
                "distillation_losses=[]"
            )
        resolved = [losses_module.get(loss) for loss in distillation_losses]
        if weights is None:
            weights = [1.0] * len(resolved)
        weights = check_weights(weights, len(resolved))
        needing = [type(x).__name__ for x in resolved if x.needs_teacher]
        if self.teacher is None and needing:
            raise ValueError(
                "Invalid value for argument `teacher`. Expected a "
                f"`keras.Model`: the losses {needing} need a teacher. "
                "Received: teacher=None"
            )

        # Drop the variables of the losses this call replaces.
        for variable in self.__dict__.get("_loss_variables", []):
            internals.untrack_variable(self, variable)
        names = set()
        for i, loss in enumerate(resolved):
            if loss.name in names:
                loss.name = f"{loss.name}_{i}"
            names.add(loss.name)
            loss.bind(self)
        weight_variables = [
            self.add_weight(
                shape=(),
                initializer=keras.initializers.Constant(weight),
                dtype="float32",
                trainable=False,
                autocast=False,
                name=f"{loss.name}_weight",
            )
            for loss, weight in zip(resolved, weights)
        ]
        object.__setattr__(self, "_distill_losses", resolved)
        object.__setattr__(self, "_weight_variables", weight_variables)
        object.__setattr__(
            self,
            "_loss_variables",
            weight_variables
            + [v for loss in resolved for v in loss._bound.values()],
        )
        object.__setattr__(
            self,
            "_weighted",
            [accepts_sample_weight(loss) for loss in resolved],
        )
        self.train_function = None
        self.test_function = None
        if self.student.built and (self.teacher is None or self.teacher.built):
            self._set_views()

    def _set_views(self):
        """Builds the teacher's and the student's views, checks them
        against the losses and builds the losses' own layers.

        Needs built models: at construction, or for models built on their
        first batch, at the start of `fit` / `evaluate` / `predict`.
        """
        resolved = self._distill_losses
        teacher_view = None
        if self.teacher is not None:
            teacher_view = ModelView(
                self.teacher,
                "teacher",
                {
                    n
                    for x in resolved
                    if x.needs_teacher
                    for n in layer_names(x.teacher_layer)
                },
                self.teacher_output,
                self.teacher_output_type,
            )
        student_view = ModelView(
            self.student,
            "student",
            {n for x in resolved for n in layer_names(x.student_layer)},
            self.student_output,
            self.student_output_type,
        )
        self._validate_losses(resolved, teacher_view, student_view)
        object.__setattr__(self, "_teacher_view", teacher_view)
        object.__setattr__(self, "_student_view", student_view)
        self._build_loss_layers(resolved)
        if hasattr(self.student, "output_names"):
            self.output_names = self.student.output_names

    def _build_loss_layers(self, resolved):
        """Builds each loss' own layers and tracks them for saving."""

        def shapes(view, spec):
            if view is None:
                return None
            if spec is None:
                return view.logits_shape()
            if isinstance(spec, str):
                return view.feature_shape(spec)
            return [view.feature_shape(name) for name in spec]

        while self._loss_layers:
            self._loss_layers.pop()
        for loss in resolved:
            loss.build(
                shapes(
                    self._teacher_view if loss.needs_teacher else None,
                    loss.teacher_layer,
                ),
                shapes(self._student_view, loss.student_layer),
            )
            for layer in loss.layers:
                self._loss_layers.append(layer)

    def _validate_losses(self, resolved, teacher_view, student_view):
        if self.teacher is None:
            for loss in resolved:
                loss.validate_models(None, self.student)
            return
        t_shape = input_shape(self.teacher)
        s_shape = input_shape(self.student) or t_shape
        if (
            self.teacher_preprocessing is None
            and t_shape is not None
            and s_shape is not None
            and (
                len(t_shape) != len(s_shape)
                or any(
                    a is not None and b is not None and a != b
                    for a, b in zip(t_shape[1:], s_shape[1:])
                )
            )
        ):
            raise ValueError(
                "Invalid teacher and student. Expected both to take the same "
                f"inputs. Received: teacher input shape {t_shape}, student "
                f"input shape {s_shape}. If the teacher needs its own input "
                "size or scale, pass `teacher_preprocessing=` (for example "
                "`keras.Sequential([keras.layers.Resizing(h, w), "
                "keras.layers.Rescaling(scale, offset)])`): it is applied to "
                "the teacher's inputs only."
            )
        t_classes = s_classes = None
        if any(x.needs_logits for x in resolved):
            t_classes = _classes(teacher_view)
            s_classes = _classes(student_view)
        for loss in resolved:
            loss.validate_models(self.teacher, self.student)
            if (
                loss.needs_logits
                and t_classes is not None
                and s_classes is not None
                and t_classes != s_classes
            ):
                raise ValueError(
                    f"Invalid teacher and student for `{type(loss).__name__}`."
                    " Expected both to output the same number of classes. "
                    f"Received: teacher classes={t_classes}, student "
                    f"classes={s_classes}"
                )

    def _build_models(self, x):
        """Builds unbuilt teacher / student on a batch, then the views."""
        if self._student_view is not None:
            return
        sample = _first_inputs(x)
        if sample is None:
            raise ValueError(
                "Invalid data. Expected at least one batch to build the "
                f"unbuilt model(s) {self._unbuilt()} on. Received: no batch"
            )
        if not all(hasattr(a, "shape") for a in keras.tree.flatten(sample)):
            raise ValueError(
                "Invalid data to build the unbuilt model(s) "
                f"{self._unbuilt()} on. Expected arrays, a `tf.data.Dataset` "
                "or a `keras.utils.PyDataset`, or models built first (call "
                "them on a batch). Received: x of type "
                f"{type(sample).__name__}"
            )
        with self.distribute_strategy.scope():
            if not self.student.built:
                self.student(sample, training=False)
            if self.teacher is not None and not self.teacher.built:
                teacher_x = sample
                if self.teacher_preprocessing is not None:
                    teacher_x = self.teacher_preprocessing(sample)
                self.teacher(teacher_x, training=False)
            self._set_views()
        self.built = True

    def _unbuilt(self):
        return [
            m.name
            for m in (self.teacher, self.student)
            if m is not None and not m.built
        ]

    @property
    def _teacher_feature_extractor(self):
        """The teacher's functional view (`keras.distillation`'s name):
        its outputs are the final output and each feature a loss reads."""
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
        return as_float(self._alpha)

    @student_loss_weight.setter
    def student_loss_weight(self, value):
        self._alpha.assign(check_fraction("student_loss_weight", value))

    @property
    def distillation_loss_weights(self):
        """The weight of each distillation loss, as a list of floats."""
        return [as_float(v) for v in self._weight_variables]

    @distillation_loss_weights.setter
    def distillation_loss_weights(self, weights):
        weights = check_weights(weights, len(self._weight_variables))
        for variable, weight in zip(self._weight_variables, weights):
            variable.assign(weight)

    @property
    def temperature(self):
        """The temperature of the first loss that has one, or None.

        Assigning it sets the temperature of every loss that has one.
        """
        for loss in self._distill_losses:
            if "temperature" in loss.variables:
                return loss.temperature
        return None

    @temperature.setter
    def temperature(self, value):
        with_temperature = [
            x for x in self._distill_losses if "temperature" in x.variables
        ]
        if not with_temperature:
            raise ValueError(
                "Cannot set `temperature`: none of the distillation losses "
                f"{[type(x).__name__ for x in self._distill_losses]} has one."
            )
        for loss in with_temperature:
            loss.temperature = value

    # ------------------------------------------------------------------
    # Which weights train.

    @property
    def trainable_weights(self):
        if not self.trainable:
            return []
        weights = list(self.student.trainable_weights)
        seen = {id(w) for w in weights}
        for loss in self._distill_losses:
            for w in getattr(loss, "trainable_weights", []):
                if id(w) not in seen:
                    weights.append(w)
                    seen.add(id(w))
        return weights

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

    # ------------------------------------------------------------------
    # Compile.

    def compile(
        self,
        optimizer="rmsprop",
        loss=None,
        metrics=None,
        *,
        evaluate_distillation=False,
        nan_policy="raise",
        student_loss_fn=None,
        distillation_loss_fn=None,
        alpha=None,
        temperature=None,
        **kwargs,
    ):
        """Configures the distiller for training.

        Takes `keras.Model.compile`'s arguments, which apply to the student
        (`loss` is the student's supervised loss, `metrics` are computed on
        the student's predictions), plus the keras.io Distiller example's
        keywords so that code written for it runs unchanged.

        Args:
            optimizer: Optimizer name or instance, for the student.
            loss: The student's supervised loss (name, instance, function,
                or a structure matching the student's outputs). May be
                `None` only when `student_loss_weight` is 0.
            metrics: Metrics on the student's predictions.
            evaluate_distillation: If True, `evaluate()` also runs the
                teacher and reports `distillation_loss`, and its `loss` is
                the training objective. Defaults to False: `evaluate()`
                measures the student alone.
            nan_policy: `"raise"` (the default): `fit` stops with a
                `keras_distill.checks.NonFiniteLossError` naming the bad
                term as soon as the loss is NaN or infinite; `"ignore"`:
                train on regardless (Keras' own behaviour).
            student_loss_fn: keras.io name for `loss`.
            distillation_loss_fn: keras.io argument: a Keras loss applied to
                the softened distributions. A KL divergence (the example's
                choice) keeps `LogitsDistillation`; another loss becomes
                `SoftTargetDistillation(distillation_loss_fn)`.
            alpha: keras.io name for `student_loss_weight`.
            temperature: keras.io argument: sets the temperature of every
                distillation loss that has one.
            **kwargs: Other `keras.Model.compile` arguments
                (`loss_weights`, `weighted_metrics`, `run_eagerly`,
                `steps_per_execution`, `jit_compile`, `auto_scale_loss`).

        Raises:
            ValueError: If both `loss` and `student_loss_fn` are given, if a
                value is invalid, or if `loss` is missing while
                `student_loss_weight` is above 0.

        Example:

        ```python
        distiller.compile(
            optimizer=keras.optimizers.Adam(),
            metrics=[keras.metrics.SparseCategoricalAccuracy()],
            student_loss_fn=keras.losses.SparseCategoricalCrossentropy(
                from_logits=True
            ),
            distillation_loss_fn=keras.losses.KLDivergence(),
            alpha=0.1,
            temperature=10,
        )
        ```
        """
        if student_loss_fn is not None:
            if loss is not None:
                raise ValueError(
                    "Invalid arguments to `compile()`. Expected `loss` or "
                    "`student_loss_fn`, not both. Received: "
                    f"loss={loss!r}, student_loss_fn={student_loss_fn!r}"
                )
            loss = student_loss_fn
        if not isinstance(evaluate_distillation, bool):
            raise ValueError(
                "Invalid value for argument `evaluate_distillation`. Expected "
                "a bool. Received: "
                f"evaluate_distillation={evaluate_distillation!r}"
            )
        check_nan_policy(nan_policy)
        if alpha is not None:
            self.student_loss_weight = alpha
        if distillation_loss_fn is not None:
            self._use_keras_io_loss(distillation_loss_fn, temperature)
        if temperature is not None:
            self.temperature = temperature
        if loss is None and self.student_loss_weight > 0:
            raise ValueError(
                "Invalid value for argument `loss`. Expected the student's "
                "supervised loss, because student_loss_weight="
                f"{self.student_loss_weight} > 0 (set student_loss_weight=0 "
                "to distill without labels). Received: loss=None"
            )
        super().compile(
            optimizer=optimizer, loss=loss, metrics=metrics, **kwargs
        )
        self._evaluate_distillation = evaluate_distillation
        self._nan_policy = nan_policy
        internals.set_compile_option(
            self, "evaluate_distillation", evaluate_distillation
        )
        internals.set_compile_option(self, "nan_policy", nan_policy)

    def _use_keras_io_loss(self, loss_fn, temperature):
        is_kl = is_kl_divergence(loss_fn)
        current = self._distill_losses
        keeps_logits = (
            len(current) == 1 and type(current[0]) is LogitsDistillation
        )
        if is_kl and keeps_logits:
            return
        kept = current[0].temperature if keeps_logits else 4.0
        new = (
            LogitsDistillation(temperature=temperature or kept)
            if is_kl
            else SoftTargetDistillation(
                loss=loss_fn, temperature=temperature or kept
            )
        )
        self._set_losses([new], None)

    def get_compile_config(self):
        config = super().get_compile_config()
        if config:
            config["evaluate_distillation"] = self._evaluate_distillation
        return config

    def compile_from_config(self, config):
        config = dict(config)
        evaluate_distillation = config.pop("evaluate_distillation", False)
        nan_policy = config.pop("nan_policy", "raise")
        config = keras.saving.deserialize_keras_object(config)
        self.compile(
            **config,
            evaluate_distillation=evaluate_distillation,
            nan_policy=nan_policy,
        )
        if self.optimizer is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    # ------------------------------------------------------------------
    # Forward passes.

    def call(self, inputs, training=None):
        """The student's forward pass."""
        inputs, _ = _split_cached(inputs)
        return self.student(inputs, training=training)

    def _teacher_outputs(self, x, cached=None):
        if self.teacher is None or not any(
            loss.needs_teacher for loss in self._distill_losses
        ):
            return None
        view = self._teacher_view
        if cached is not None:
            if view.features:
                raise ValueError(
                    "A teacher cache holds the teacher's outputs only. "
                    "Expected no loss on intermediate teacher features with "
                    "cached data. Received: losses on teacher layers "
                    f"{[x.teacher_layer for x in self._distill_losses]}"
                )
            return {LOGITS: view.logits(cached), MASK: None}
        if self.teacher_preprocessing is not None:
            x = self.teacher_preprocessing(x)
        return view(x, training=False)

    def _distillation_loss(self, teacher_outputs, student_outputs, y, weight):
        total = ops.zeros((), dtype="float32")
        for loss, loss_weight, weighted in zip(
            self._distill_losses, self._weight_variables, self._weighted
        ):
            if loss.needs_labels and y is None:
                raise ValueError(
                    f"`{type(loss).__name__}` needs labels. Expected data "
                    "as (x, y). Received: x only"
                )
            student = _select(student_outputs, loss.student_layer)
            kwargs = {}
            if weighted:
                mask = (
                    student_outputs[MASK]
                    if loss.student_layer is None
                    else keras_mask(student)
                )
                kwargs["sample_weight"] = merge_mask(weight, mask)
            value = loss.compute(
                _select(teacher_outputs, loss.teacher_layer)
                if loss.needs_teacher
                else None,
                student,
                y_true=y,
                **kwargs,
            )
            if len(value.shape) != 0:
                raise ValueError(
                    f"`{type(loss).__name__}.compute` must return a scalar. "
                    f"Received: a tensor of shape {tuple(value.shape)}"
                )
            total = total + loss_weight * ops.cast(value, "float32")
        return total

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        """The student's supervised loss plus its regularization losses.

        This is what `student.compute_loss` would return for the same batch
        (sample weights applied, scaled for the number of replicas); the
        distillation terms are added in `train_step`.

        Args:
            x: Input data.
            y: Target data, or None.
            y_pred: The student's predictions.
            sample_weight: Sample weights (class weights already folded in).
            training: Whether the step is a training step.

        Returns:
            A float32 scalar tensor.
        """
        del x, training
        supervised = self._supervised_loss(y, y_pred, sample_weight)
        return supervised + self._regularization_loss()

    def _supervised_loss(self, y, y_pred, sample_weight):
        compiled = internals.compile_loss(self)
        if y is None or compiled is None:
            return ops.zeros((), dtype="float32")
        value = compiled(y, y_pred, sample_weight)
        if value is None:
            return ops.zeros((), dtype="float32")
        return ops.cast(value, "float32")

    def _regularization_loss(self):
        extra = [ops.sum(ops.cast(x, "float32")) for x in self.student.losses]
        for loss in self._distill_losses:
            extra += [
                ops.cast(x, "float32") for x in getattr(loss, "losses", [])
            ]
        if not extra:
            return ops.zeros((), dtype="float32")
        return replica_share(ops.sum(ops.stack(extra)))

    # ------------------------------------------------------------------
    # Steps.

    def _check_labels(self, y):
        if y is None and internals.compile_loss(self) is not None:
            raise ValueError(
                "Invalid data for `fit()`. Expected (x, y) because the "
                "student's supervised loss needs labels. Received: x "
                "without y. Pass labels, or set student_loss_weight=0 and "
                "compile with loss=None to distill without labels."
            )

    def _objective(
        self, x, y, sample_weight, teacher_outputs, training, mix=(None, None)
    ):
        """Student forward pass and every loss term, inside the tape."""
        student_outputs = self._student_view(x, training=training)
        y_pred = student_outputs[OUTPUT]
        perm, lam = mix
        supervised = self._supervised_loss(y, y_pred, sample_weight)
        if perm is not None and y is not None:
            mixed = self._supervised_loss(
                keras.tree.map_structure(
                    lambda t: ops.take(t, perm, axis=0), y
                ),
                y_pred,
                sample_weight,
            )
            supervised = lam * supervised + (1.0 - lam) * mixed
        distillation = self._distillation_loss(
            teacher_outputs, student_outputs, y, sample_weight
        )
        alpha = self._alpha
        total = (
            alpha * supervised
            + (1.0 - alpha) * replica_share(distillation)
            + self._regularization_loss()
        )
        return y_pred, supervised, distillation, total

    def _update_trackers(self, x, supervised, distillation, total):
        import tensorflow as tf

        batch = tf.shape(next(i for i in keras.tree.flatten(x)))[0]
        replicas = replica_count()
        internals.loss_tracker(self).update_state(
            total * replicas, sample_weight=batch
        )
        self._student_loss_tracker.update_state(
            supervised * replicas, sample_weight=batch
        )
        if distillation is not None:
            self._distillation_loss_tracker.update_state(
                distillation, sample_weight=batch
            )

    def _metrics_result(self, x, y, y_pred, sample_weight):
        if y is not None:
            logs = self.compute_metrics(x, y, y_pred, sample_weight)
        else:
            logs = self.get_metrics_result()
        # `keras.distillation`'s name for the training objective.
        logs["total_loss"] = logs["loss"]
        return logs

    def train_step(self, data):
        import tensorflow as tf

        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        self._check_labels(y)
        x, cached = _split_cached(x)
        mix = (None, None)
        if self.augment is not None:
            if cached is not None:
                raise ValueError(_AUGMENT_WITH_CACHE)
            x, perm, lam = self.augment.augment(x)
            mix = (perm, lam)
        teacher_outputs = self._teacher_outputs(x, cached)
        with tf.GradientTape() as tape:
            y_pred, supervised, distillation, total = self._objective(
                x, y, sample_weight, teacher_outputs, training=True, mix=mix
            )
            if getattr(self, "_nan_policy", "raise") == "raise" and not (
                self.jit_compile
            ):
                supervised = check_finite(supervised, "student_loss")
                distillation = check_finite(distillation, "distillation_loss")
            self._update_trackers(x, supervised, distillation, total)
            scaled = self.optimizer.scale_loss(total)
        variables = self.trainable_weights
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        return multi_worker_logs(
            self._metrics_result(x, y, y_pred, sample_weight)
        )

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x, cached = _split_cached(x)
        if self._evaluate_distillation:
            teacher_outputs = self._teacher_outputs(x, cached)
            y_pred, supervised, distillation, total = self._objective(
                x, y, sample_weight, teacher_outputs, training=False
            )
        else:
            y_pred = self.student(x, training=False)
            supervised = self._supervised_loss(y, y_pred, sample_weight)
            total = supervised + self._regularization_loss()
            distillation = None
        self._update_trackers(x, supervised, distillation, total)
        logs = self._metrics_result(x, y, y_pred, sample_weight)
        if distillation is None:
            logs = {k: v for k, v in logs.items() if k != "distillation_loss"}
        return multi_worker_logs(logs)

    def _check_data(self, method, x, y=None):
        if method == "fit" and self.augment is not None:
            import tensorflow as tf

            from keras_distill.teachers import TEACHER_KEY

            spec = getattr(x, "element_spec", None)
            if isinstance(x, tf.data.Dataset) and isinstance(spec, tuple):
                spec = spec[0]
            if isinstance(spec, dict) and TEACHER_KEY in spec:
                raise ValueError(_AUGMENT_WITH_CACHE)
        inputs, _ = _split_cached(x)
        check_inputs(method, inputs, expected_inputs(self.student))
        check_labels(method, inputs, y, _output_classes(self.student))
        if x is None:
            return
        if self._student_view is None:
            self._build_models(x)
        if method == "predict":
            return
        sample = None
        for view, preprocessing in (
            (self._teacher_view, self.teacher_preprocessing),
            (self._student_view, None),
        ):
            if view is None or not view.probes:
                continue
            sample = _first_inputs(x) if sample is None else sample
            if sample is None:
                continue
            view.check_probabilities(
                sample if preprocessing is None else preprocessing(sample)
            )

    def fit(self, *args, **kwargs):
        """Trains the student; the same arguments as `keras.Model.fit`.

        Before anything is traced, array inputs are checked against the
        student (shape, finite values, labels within its classes, at least
        one example) and datasets by their spec. Losses that change with
        the epoch (they override `DistillationLoss.on_epoch_begin`, as
        `DKD`'s warm-up does) are told each epoch's index before it starts.
        With `compile(nan_policy="raise")`, the default, a non-finite loss
        stops training with `keras_distill.checks.NonFiniteLossError`.

        Returns:
            A `keras.callbacks.History`, as `keras.Model.fit` returns.

        Raises:
            ValueError: If the data does not suit the student.
            keras_distill.checks.NonFiniteLossError: If the loss becomes NaN
                or infinite under `nan_policy="raise"`.
        """
        bound = inspect.signature(keras.Model.fit).bind(self, *args, **kwargs)
        arguments = bound.arguments
        self._check_data("fit", arguments.get("x"), arguments.get("y"))
        if "shuffle" not in arguments and _is_dataset(arguments.get("x")):
            # Keras ignores `shuffle` for a dataset, and warns when it is
            # left at its default: a dataset is shuffled by its own ops.
            arguments["shuffle"] = False
        first, last = [], []
        hooked = [
            loss
            for loss in self._distill_losses
            if type(loss).on_epoch_begin
            is not losses_module.DistillationLoss.on_epoch_begin
        ]
        if hooked:
            first.append(_LossEpochHooks(hooked))
        guard = None
        if getattr(self, "_nan_policy", "raise") == "raise":
            guard = NonFiniteLossGuard()
            last.append(guard)
        callbacks = arguments.get("callbacks") or []
        if isinstance(callbacks, keras.callbacks.CallbackList):
            for callback in first + last:
                callbacks.append(callback)
        elif first or last:
            arguments["callbacks"] = first + list(callbacks) + last
        try:
            return super().fit(*bound.args[1:], **bound.kwargs)
        except Exception as error:
            term = term_from_error(error) if guard is not None else None
            if term is None:
                raise
            raise NonFiniteLossError(
                non_finite_message(term, guard.epoch)
            ) from None

    def evaluate(self, *args, **kwargs):
        """Evaluates the student; the same arguments as `Model.evaluate`.

        Array inputs and labels are checked as in `fit` first.
        """
        bound = inspect.signature(keras.Model.evaluate).bind(
            self, *args, **kwargs
        )
        self._check_data(
            "evaluate", bound.arguments.get("x"), bound.arguments.get("y")
        )
        return super().evaluate(*bound.args[1:], **bound.kwargs)

    def predict(self, *args, **kwargs):
        """The student's predictions; the same arguments as `Model.predict`.

        Array inputs are checked as in `fit` first.
        """
        bound = inspect.signature(keras.Model.predict).bind(
            self, *args, **kwargs
        )
        self._check_data("predict", bound.arguments.get("x"))
        return super().predict(*bound.args[1:], **bound.kwargs)

    # ------------------------------------------------------------------
    # Serialization.

    def get_config(self):
        """Returns the constructor arguments, teacher and student included."""
        return {
            "name": self.name,
            "trainable": self.trainable,
            "teacher": None
            if self.teacher is None
            else keras.saving.serialize_keras_object(self.teacher),
            "student": keras.saving.serialize_keras_object(self.student),
            "distillation_losses": [
                keras.saving.serialize_keras_object(x)
                for x in self._distill_losses
            ],
            "distillation_loss_weights": self.distillation_loss_weights,
            "student_loss_weight": self.student_loss_weight,
            "augment": None
            if self.augment is None
            else keras.saving.serialize_keras_object(self.augment),
            "teacher_output": self.teacher_output,
            "student_output": self.student_output,
            "teacher_output_type": self.teacher_output_type,
            "student_output_type": self.student_output_type,
            "teacher_preprocessing": None
            if self.teacher_preprocessing is None
            else keras.saving.serialize_keras_object(
                self.teacher_preprocessing
            ),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """Builds a distiller from the dict `get_config` returned."""
        # Keras' deserialization consumes nested dicts: work on a copy.
        config = copy.deepcopy(config)
        for key in ("teacher", "student"):
            if config[key] is None:
                continue
            config[key] = keras.saving.deserialize_keras_object(
                config[key], custom_objects=custom_objects
            )
        for key in ("augment", "teacher_preprocessing"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(
                    config[key], custom_objects=custom_objects
                )
        config["distillation_losses"] = [
            keras.saving.deserialize_keras_object(
                x, custom_objects=custom_objects
            )
            for x in config["distillation_losses"]
        ]
        return cls(**config)
