"""`Ensemble`: several teachers as one, each seen as a single teacher is."""

import math

import keras

from keras_distill._validation import check_choice
from keras_distill._validation import check_positive
from keras_distill._views import LOGITS
from keras_distill._views import ModelView


@keras.saving.register_keras_serializable(package="keras_distill")
class Ensemble(keras.Model):
    """Several teachers that act as one.

    Each member is seen as a single teacher is seen by a `Distiller`: a
    member that ends in a softmax (a `Dense(..., activation="softmax")`
    head, every `keras.applications` classifier) gives its pre-softmax
    logits from the same forward pass, a black box gives its outputs
    converted by their declared type, a member with several outputs gives
    the one chosen. From the members' logits `z_i` and the normalised
    weights `w_i`, the ensemble returns logits:

    Formula:

    ```python
    # mode="probabilities" (the default): the average softened distribution
    p = sum_i(w_i * softmax(z_i / T))
    logits = T * log(p)       # so that softmax(logits / T) == p
    # mode="logits"
    logits = sum_i(w_i * z_i)
    ```

    A `LogitsDistillation` at the same temperature then distils the
    averaged distribution. The ensemble is computed in float32, with a
    log-sum-exp (no probability is clipped).

    Args:
        teachers: A list of built `keras.Model`s with the same input and
            output shapes.
        weights: One non-negative weight per teacher (normalised to sum to
            1). Defaults to equal weights.
        mode: `"probabilities"` (the default) or `"logits"`.
        temperature: The T at which distributions are averaged; use the
            distillation loss' temperature. Defaults to 4.0 (the default of
            `LogitsDistillation`).
        outputs: For members with several outputs, the one to combine (a
            name or an index): one choice for every member, or a list
            with one per member (None for a single-output member).
        output_types: What a member returns when its head cannot be
            inspected (a subclassed model, a `TFSMLayer`): `"auto"`,
            `"logits"`, `"probabilities"` or `"log_probabilities"`, as
            `teacher_output_type` of `keras_distill.Distiller`; one for
            every member, or a list with one per member.
        name: The model's name.
        **kwargs: Passed on to `keras.Model`.

    Raises:
        ValueError: For an empty list, something that is not a built
            `keras.Model`, weights of the wrong length or sign, an unknown
            mode, or outputs and output types that do not fit the members
            (the message lists a member's outputs).

    Example:

    ```python
    teacher = keras_distill.teachers.Ensemble(
        [teacher_a, teacher_b], weights=[0.75, 0.25], temperature=4.0
    )
    distiller = keras_distill.Distiller(teacher, student)
    ```
    """

    def __init__(
        self,
        teachers,
        weights=None,
        mode="probabilities",
        temperature=4.0,
        outputs=None,
        output_types="auto",
        name="ensemble",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if not isinstance(teachers, (list, tuple)) or not teachers:
            raise ValueError(
                "Invalid value for argument `teachers`. Expected a non-empty "
                f"list of built keras.Model. Received: teachers={teachers!r}"
            )
        for i, teacher in enumerate(teachers):
            if not isinstance(teacher, keras.Model) or not teacher.built:
                raise ValueError(
                    "Invalid value for argument `teachers`. Expected built "
                    f"keras.Model objects. Received: teachers[{i}]="
                    f"{teacher!r}"
                )
        if weights is None:
            weights = [1.0] * len(teachers)
        if (
            not isinstance(weights, (list, tuple))
            or len(weights) != len(teachers)
            or any(
                isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0
                for w in weights
            )
            or not sum(weights) > 0
        ):
            raise ValueError(
                "Invalid value for argument `weights`. Expected "
                f"{len(teachers)} non-negative floats, not all zero. "
                f"Received: weights={weights!r}"
            )
        check_choice("mode", mode, ("probabilities", "logits"))
        check_positive("temperature", temperature)
        self.teachers = list(teachers)
        total = float(sum(weights))
        self.weights_ = [float(w) / total for w in weights]
        self._raw_weights = [float(w) for w in weights]
        self.mode = mode
        self.temperature = float(temperature)
        self.outputs_ = outputs
        self.output_types = output_types
        choices = _per_member("outputs", outputs, len(teachers))
        types = _per_member("output_types", output_types, len(teachers))
        # Not tracked: the views hold the members (already tracked) and
        # functional replays of them that share their weights.
        object.__setattr__(
            self,
            "member_views",
            [
                _member_view(teacher, i, choice, kind)
                for i, (teacher, choice, kind) in enumerate(
                    zip(self.teachers, choices, types)
                )
            ],
        )
        self.built = True

    def call(self, inputs, training=False):
        logits = [
            view(inputs, training=False)[LOGITS] for view in self.member_views
        ]
        if self.mode == "logits":
            return sum(w * z for w, z in zip(self.weights_, logits))
        t = self.temperature
        # log p = logsumexp_i(log w_i + log_softmax(z_i / T)), skipping
        # members of weight 0.
        terms = [
            math.log(w) + keras.ops.log_softmax(z / t, axis=-1)
            for w, z in zip(self.weights_, logits)
            if w > 0
        ]
        stacked = keras.ops.stack(terms, axis=0)
        return t * keras.ops.logsumexp(stacked, axis=0)

    def compute_output_spec(self, inputs, training=False):
        shape = self.member_views[0].logits_shape()
        if shape is None:  # a black-box member: trace the call
            return super().compute_output_spec(inputs, training=training)
        return keras.KerasTensor(shape, dtype="float32")

    def get_config(self):
        return {
            "name": self.name,
            "teachers": [
                keras.saving.serialize_keras_object(t) for t in self.teachers
            ],
            "weights": self._raw_weights,
            "mode": self.mode,
            "temperature": self.temperature,
            "outputs": self.outputs_,
            "output_types": self.output_types,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["teachers"] = [
            keras.saving.deserialize_keras_object(t) for t in config["teachers"]
        ]
        return cls(**config)


def _per_member(argument, value, count):
    """One value per member from one value or a list of `count`."""
    if isinstance(value, (list, tuple)):
        if len(value) != count:
            raise ValueError(
                f"Invalid value for argument `{argument}`. Expected one "
                f"value for every member or a list of {count}. Received: "
                f"{argument}={value!r}"
            )
        return list(value)
    return [value] * count


def _member_view(teacher, i, output, output_type):
    """The view of member `i`: its logits, as a single teacher's."""
    return ModelView(
        teacher,
        f"ensemble member {i}",
        output=output,
        output_type=output_type,
        arguments=(
            f"outputs[{i}]",
            f"output_types[{i}]",
            "keras_distill.teachers.Ensemble",
        ),
    )
