"""What the losses compare: logits and features from one forward pass.

A `ModelView` calls a teacher or a student once and returns, in one dict,

- `OUTPUT`: the model's whole output, as `model(x)` returns it (the
  student's supervised loss and metrics use it);
- `LOGITS`: the output the logits losses compare, as logits: the output
  chosen by name or index when the model has several, with a final softmax
  undone (the pre-softmax tensor of the same forward pass, never
  `log(softmax(z))`) or, for a model whose head cannot be inspected, the
  conversion its declared output type asks for;
- one entry per named intermediate layer a feature loss asks for.

Models whose last operation is a softmax are detected through their
functional graph: a `keras.layers.Softmax` layer, an `Activation("softmax")`
layer, any layer built with `activation="softmax"` (the `Dense` head of
every `keras.applications` classifier), also inside nested models.
"""

import re
import warnings

import keras
from keras import ops

from keras_distill import _graphs as graphs
from keras_distill import _keras_internals as internals
from keras_distill._validation import check_output_choice
from keras_distill._validation import check_output_type
from keras_distill.losses.base import layer_names as loss_layer_names
from keras_distill.losses.divergences import is_top_k

OUTPUT = "__output__"
LOGITS = graphs.LOGITS
MASK = "__mask__"
_TINY = 1e-30


def to_logits(outputs, output_type):
    """Outputs of a declared type as float32 logits, exactly and stably.

    Probabilities are clipped at 1e-30 and logged: `softmax(log p / T)` is
    the distribution `p^(1/T)` renormalised, as from the logits. Log
    probabilities are logits already (softmax ignores a constant per row).

    Args:
        outputs: A tensor, classes on the last axis.
        output_type: `"logits"`, `"log_probabilities"`, `"probabilities"`
            or `"auto"` (treated as logits).

    Returns:
        A float32 tensor of the same shape.
    """
    outputs = ops.cast(outputs, "float32")
    if output_type == "probabilities":
        return ops.log(ops.maximum(outputs, _TINY))
    return outputs


def looks_like_probabilities(values):
    """Whether a NumPy batch is non-negative with rows summing to 1."""
    import numpy as np

    values = np.asarray(values, np.float64)
    if values.ndim < 2 or values.shape[-1] < 2 or not values.size:
        return False
    if values.min() < 0:
        return False
    return bool(np.allclose(values.sum(axis=-1), 1.0, atol=1e-3))


def probability_warning(role, argument=None, owner=None):
    """The one-time warning for outputs that look like probabilities.

    Args:
        role: Whose outputs (`"teacher"`, `"student"`, `"ensemble member
            0"`).
        argument: The argument that declares them (default
            `<role>_output_type`).
        owner: The class that takes it (default `keras_distill.Distiller`).
    """
    argument = argument or f"{role}_output_type"
    owner = owner or "keras_distill.Distiller"
    return (
        f"The {role}'s outputs look like probabilities (non-negative, every "
        "row sums to 1) but its head could not be inspected and nothing was "
        "declared, so they are used as logits, which gives a wrong "
        f"distillation loss. Pass `{argument}='probabilities'` to "
        f"`{owner}` (or `'logits'` to silence this warning)."
    )


def warn_probabilities(role, argument=None, owner=None):
    warnings.warn(
        probability_warning(role, argument, owner), UserWarning, stacklevel=3
    )


class ModelView:
    """One forward pass of a model yielding its output, logits and features.

    Args:
        model: A built `keras.Model`.
        role: `"teacher"` or `"student"`, for messages.
        features: Names of intermediate layers to return.
        output: The output the logits losses compare (name or index), for
            models with several.
        output_type: What the chosen output holds when its head cannot be
            inspected: `"auto"` (logits, with a warning if they look like
            probabilities), `"logits"`, `"probabilities"` or
            `"log_probabilities"`.
        arguments: The names of the arguments that set `output` and
            `output_type`, for messages (default `<role>_output`,
            `<role>_output_type`), and the class that takes them.

    A model that returns logits made from views of its own members (a
    `keras_distill.teachers.Ensemble`, through its `member_views`) is
    known to return logits; its members are probed instead of it.

    Raises:
        ValueError: If a layer name is unknown, a feature is asked of a
            subclassed model, the output choice is ambiguous, or the model
            ends in a softmax while `output_type="logits"` says otherwise.
    """

    def __init__(
        self,
        model,
        role,
        features=(),
        output=None,
        output_type="auto",
        arguments=None,
    ):
        self.model = model
        self.role = role
        output_arg, type_arg, self._owner = arguments or (
            f"{role}_output",
            f"{role}_output_type",
            None,
        )
        self._type_arg = type_arg
        self.output = check_output_choice(
            graphs.output_names(model), model.name, role, output, output_arg
        )
        self.output_type = check_output_type(role, output_type, type_arg)
        self.features = sorted(set(features))
        self.head = graphs.softmax_head(model, self.output)
        if self.head is not None and output_type == "logits":
            raise ValueError(
                f"Invalid value for argument `{type_arg}`. The "
                f"{role} {model.name!r} ends in a softmax (layer "
                f"{self.head[-1].name!r}), so its outputs are probabilities."
                f" Expected 'auto' (its logits are then taken from before "
                f"the softmax). Received: {type_arg}='logits'"
            )
        self.members = list(getattr(model, "member_views", ()))
        if self.members and output_type == "probabilities":
            raise ValueError(
                f"Invalid value for argument `{type_arg}`. The {role} "
                f"{model.name!r} is an ensemble: it returns logits made from "
                "its members' views (declare a member's outputs with the "
                "ensemble's `output_types=`). Expected 'auto' or 'logits'. "
                f"Received: {type_arg}='probabilities'"
            )
        self.warned = False
        self.known_logits = bool(self.members) or graphs.ends_in_known_logits(
            model, self.output
        )
        self._names = getattr(model, "output_names", None)
        self._functional = self._build() if self.replays else None

    @property
    def replays(self):
        """Whether the view replays the graph (features or a softmax)."""
        return bool(self.features) or self.head is not None

    @property
    def probes(self):
        """Whether `check_probabilities` would run the model: no softmax
        found, no output type declared, and no layer with a non-softmax
        activation making the output (a subclassed model, `TFSMLayer`);
        for an ensemble, whether one of its members' views probes."""
        if self.members:
            return not self.warned and any(m.probes for m in self.members)
        return (
            not self.warned
            and self.head is None
            and self.output_type == "auto"
            and not self.known_logits
        )

    @property
    def converts(self):
        """Whether the chosen output needs the declared conversion."""
        return self.head is None

    def _build(self):
        if graphs.graph(self.model) is None:
            raise ValueError(
                f"Invalid {self.role} for a feature loss. Expected a "
                "Functional or Sequential `keras.Model` whose layers can be "
                f"named. Received: the subclassed model {self.model.name!r}"
            )
        known = graphs.layer_names(self.model)
        for name in self.features:
            if name not in known:
                raise ValueError(
                    f"Invalid layer name for the {self.role}. Expected one "
                    f"of {known}. Received: {name!r}"
                )
        inputs = keras.tree.map_structure(
            lambda x: keras.Input(batch_shape=x.shape, dtype=x.dtype),
            graphs.graph(self.model).input,
        )
        found = {}
        output = graphs.replay(
            self.model, inputs, set(self.features), found, self.head
        )
        outputs = {OUTPUT: output}
        if LOGITS in found:
            outputs[LOGITS] = found[LOGITS]
        for name in self.features:
            outputs[name] = found[name]
        tag = re.sub(r"[^A-Za-z0-9_]+", "_", self.role).strip("_")
        return keras.Model(
            inputs, outputs, name=f"{self.model.name}_{tag}_view"
        )

    def __call__(self, x, training=False, convert=True):
        """The view's dict for a batch `x`.

        Args:
            x: The inputs.
            training: Passed to the model's layers.
            convert: Whether `LOGITS` gets the declared conversion
                (`logits`); False leaves the chosen output as it is (with
                a detected softmax undone), as a `TeacherCache` stores it.
        """
        if self._functional is not None:
            result = dict(self._functional(x, training=training))
        else:
            result = {OUTPUT: self.model(x, training=training)}
        if LOGITS in result:
            chosen = result[LOGITS]
        else:
            chosen = graphs.select_output(
                result[OUTPUT], self.output, self._names, self.role
            )
        result[MASK] = internals.keras_mask(chosen)
        result[LOGITS] = self.logits(chosen) if convert else chosen
        return result

    def logits(self, chosen):
        """The chosen output as float32 logits (declared conversion); a
        top-k teacher from a cache as it is."""
        if is_top_k(chosen):
            return chosen
        if not self.converts:
            return ops.cast(chosen, "float32")
        return to_logits(chosen, self.output_type)

    def check_probabilities(self, x, chosen=None):
        """Warns once if the chosen output of a batch looks like
        probabilities while nothing was declared (`output_type="auto"`).

        Args:
            x: A batch of the model's inputs, or None with `chosen`.
            chosen: The chosen output of that batch when it is known
                already (a teacher cache's), so the model is not run.
                An ensemble's members are run on `x` (skipped when `x` is
                None).
        """
        if not self.probes:
            return
        self.warned = True
        if self.members:
            if x is not None:
                for member in self.members:
                    member.check_probabilities(x)
            return
        if chosen is None:
            chosen = graphs.select_output(
                self.model(x, training=False),
                self.output,
                self._names,
                self.role,
            )
        if is_top_k(chosen):
            return
        if looks_like_probabilities(keras.ops.convert_to_numpy(chosen)):
            warn_probabilities(self.role, self._type_arg, self._owner)

    def logits_shape(self):
        """The static shape of the chosen output, or None if unknown."""
        output = graphs.symbolic_output(self.model)
        if output is None:
            output = self._traced_output()
        if output is None:
            return None
        chosen = graphs.select_output(
            output, self.output, self._names, self.role
        )
        return tuple(chosen.shape)

    def _traced_output(self):
        """A subclassed model's output spec, traced symbolically."""
        from keras_distill._utils import input_shape

        shape = input_shape(self.model)
        if shape is None:
            return None
        try:
            return self.model.compute_output_spec(keras.KerasTensor(shape))
        except Exception:  # A model that cannot be traced symbolically.
            return None

    def feature_shape(self, name):
        """The static shape of a named feature."""
        return tuple(self._functional.output[name].shape)

    def classes(self):
        """The last axis of the chosen output, or None if unknown."""
        shape = self.logits_shape()
        return shape[-1] if shape else None

    def shapes(self, spec):
        """The static shapes of what a loss reads (see `select`)."""
        if spec is None:
            return self.logits_shape()
        if isinstance(spec, str):
            return self.feature_shape(spec)
        return [self.feature_shape(name) for name in spec]


def select(outputs, spec):
    """What a loss reads from a view's outputs: the chosen output as
    logits (`spec` None), a named feature, or a list of features."""
    if outputs is None:
        return None
    if spec is None:
        return outputs[LOGITS]
    if isinstance(spec, str):
        return outputs[spec]
    return [outputs[name] for name in spec]


def make_views(teacher, student, losses, outputs, output_types):
    """The teacher's and the student's views for what `losses` read.

    Args:
        teacher: The teacher `keras.Model`, or None.
        student: The student `keras.Model`.
        losses: The `DistillationLoss` list (their `teacher_layer` and
            `student_layer` name the features each view returns).
        outputs: `(teacher_output, student_output)`: the chosen outputs.
        output_types: `(teacher_output_type, student_output_type)`.

    Returns:
        `(teacher view or None, student view)`, two `ModelView`s.
    """

    teacher_view = None
    if teacher is not None:
        wanted = {
            n
            for x in losses
            if x.needs_teacher
            for n in loss_layer_names(x.teacher_layer)
        }
        teacher_view = ModelView(
            teacher, "teacher", wanted, outputs[0], output_types[0]
        )
    wanted = {n for x in losses for n in loss_layer_names(x.student_layer)}
    student_view = ModelView(
        student, "student", wanted, outputs[1], output_types[1]
    )
    return teacher_view, student_view
