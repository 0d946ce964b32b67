"""Argument checks of the `Distiller`, in one calling style.

Each `check_*` function takes the argument (and its name where it varies)
and returns the value to use, or raises `ValueError` in Keras' form:
"Invalid value for argument `x`. Expected ... Received: x=...".
"""

import keras

from keras_distill._utils import nested_layers

OUTPUT_TYPES = ("auto", "logits", "probabilities", "log_probabilities")
NAN_POLICIES = ("raise", "ignore")


def check_choice(argument, value, choices):
    """`value` if it is one of `choices`; the one "Expected one of" error.

    Args:
        argument: The argument's name, for the message.
        value: What was received.
        choices: The values allowed (a sequence).

    Returns:
        `value`.

    Raises:
        ValueError: "Invalid value for argument `argument`. Expected one
            of [...]. Received: argument=value".
    """
    if value not in choices:
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected one of "
            f"{list(choices)}. Received: {argument}={value!r}"
        )
    return value


def check_output_type(role, value, argument=None):
    """Validates `teacher_output_type` / `student_output_type` (or the
    argument named `argument`)."""
    return check_choice(argument or f"{role}_output_type", value, OUTPUT_TYPES)


def check_nan_policy(value):
    """Validates `compile(nan_policy=...)`; returns it."""
    return check_choice("nan_policy", value, NAN_POLICIES)


def _describe_outputs(names):
    return ", ".join(f"{i}: {n!r}" for i, n in enumerate(names))


def check_output_choice(names, model_name, role, choice, argument=None):
    """Checks `teacher_output` / `student_output` against a model's outputs.

    Args:
        names: The model's output names (`keras_distill._views.
            output_names`): `[]` for one output, None when unknown.
        model_name: The model's name, for messages.
        role: `"teacher"` or `"student"` (or an ensemble member).
        choice: None, an output name or an index.
        argument: The argument's name in messages (default
            `<role>_output`).

    Returns:
        `choice`, unchanged.

    Raises:
        ValueError: If the model has several outputs and `choice` is None,
            or `choice` names no output; the message lists the outputs.
    """
    argument = argument or f"{role}_output"
    if choice is not None and (
        isinstance(choice, bool) or not isinstance(choice, (str, int))
    ):
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected an output "
            f"name or index. Received: {argument}={choice!r}"
        )
    if names is None or (not names and choice is None):
        return choice
    if not names:
        raise ValueError(
            f"Invalid value for argument `{argument}`. The {role} "
            f"{model_name!r} has a single output: pass {argument}=None. "
            f"Received: {argument}={choice!r}"
        )
    described = _describe_outputs(names)
    if choice is None:
        raise ValueError(
            f"Ambiguous {role} outputs. Expected `{argument}=` naming the "
            f"output the distillation losses compare: the {role} "
            f"{model_name!r} has {len(names)} outputs ({described}). "
            f"Received: {argument}=None"
        )
    if isinstance(choice, int) and not -len(names) <= choice < len(names):
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected an index "
            f"below {len(names)} or a name among ({described})."
            f" Received: {argument}={choice!r}"
        )
    if isinstance(choice, str) and choice not in names:
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected one of the "
            f"{role}'s outputs ({described}). Received: {argument}={choice!r}"
        )
    return choice


def check_backend():
    """Raises `RuntimeError` unless Keras runs on TensorFlow."""
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            "keras_distill.Distiller runs on the TensorFlow backend only. "
            "Expected KERAS_BACKEND='tensorflow'. Received: "
            f"KERAS_BACKEND={backend!r}"
        )


def check_model(arg, model):
    """Checks that `model` is a `keras.Model` (built or not)."""
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"Invalid value for argument `{arg}`. Expected a "
            f"`keras.Model`. Received: {arg}={model!r} of type "
            f"{type(model).__name__}"
        )


def check_preprocessing(value):
    """`teacher_preprocessing`: None or a callable (a layer); returned."""
    if value is None or callable(value):
        return value
    raise ValueError(
        "Invalid value for argument `teacher_preprocessing`. Expected a "
        "`keras.layers.Layer` (for example a `keras.Sequential` of "
        "`Resizing` and `Rescaling`) or a callable applied to the teacher's "
        f"inputs. Received: teacher_preprocessing={value!r}"
    )


def check_fraction(arg, value):
    """A number in [0, 1], returned as a float."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        and not hasattr(value, "__float__")
    ):
        raise ValueError(
            f"Invalid value for argument `{arg}`. Expected a float in "
            f"[0, 1]. Received: {arg}={value!r}"
        )
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(
            f"Invalid value for argument `{arg}`. Expected a float in "
            f"[0, 1]. Received: {arg}={value!r}"
        )
    return float(value)


def check_weights(weights, count):
    """`count` non-negative finite loss weights, returned as floats."""
    if isinstance(weights, (int, float)) and not isinstance(weights, bool):
        weights = [weights]
    if not isinstance(weights, (list, tuple)) or len(weights) != count:
        raise ValueError(
            "Invalid value for argument `distillation_loss_weights`. Expected "
            f"a list of {count} non-negative floats, one per distillation "
            f"loss. Received: distillation_loss_weights={weights!r}"
        )
    checked = []
    for weight in weights:
        if (
            isinstance(weight, bool)
            or not isinstance(weight, (int, float))
            or not weight >= 0
            or weight == float("inf")
        ):
            raise ValueError(
                "Invalid value for argument `distillation_loss_weights`. "
                "Expected non-negative finite floats. Received: "
                f"distillation_loss_weights={list(weights)!r}"
            )
        checked.append(float(weight))
    return checked


def check_bool(arg, value):
    """Checks that `value` is a bool; returns it."""
    if not isinstance(value, bool):
        raise ValueError(
            f"Invalid value for argument `{arg}`. Expected a bool. "
            f"Received: {arg}={value!r}"
        )
    return value


def check_teacher_and_student(teacher, student):
    """Checks the two models: `keras.Model`s (the teacher may be None),
    not the same object, and a student built in the strategy's scope
    when the distiller is made in one."""
    if teacher is not None:
        check_model("teacher", teacher)
    check_model("student", student)
    if teacher is student:
        raise ValueError(
            "Invalid value for argument `student`. Expected a model "
            "other than the teacher. Received: the same object as "
            f"teacher and student ({teacher.name!r})"
        )
    check_in_strategy_scope(student)


def shared_with_teacher(teacher, student):
    """The layers and variables a student shares with its teacher.

    Args:
        teacher: The teacher `keras.Model`, or None.
        student: The student `keras.Model`.

    Returns:
        `(layer names, variable paths)`, both sorted: the layers with
        weights both models hold, and their variables (empty when the two
        share nothing; unbuilt layers have no weights yet, so the
        `Distiller` checks again once the models are built).
    """
    if teacher is None:
        return [], []
    # Layers without weights (inputs, Concatenate, Activation) share
    # nothing that trains.
    teacher_layers = {id(layer) for layer in nested_layers(teacher)}
    layers = sorted(
        {
            layer.name
            for layer in nested_layers(student)
            if id(layer) in teacher_layers and layer.weights
        }
    )
    teacher_variables = {id(v) for v in teacher.weights}
    variables = sorted(
        {v.path for v in student.weights if id(v) in teacher_variables}
    )
    return layers, variables


def check_shared_layers(teacher, student, allow_shared_layers):
    """Refuses a student that shares layers or variables with its teacher,
    unless `allow_shared_layers` (then the shared weights train with the
    student, and the teacher changes with them)."""
    layers, variables = shared_with_teacher(teacher, student)
    if (layers or variables) and not allow_shared_layers:
        raise ValueError(
            "Invalid value for argument `student`. Expected a student that "
            "shares no layer with the teacher: a shared layer's weights "
            "would train with the student and change the teacher. "
            f"Received: a student sharing the layers {layers} (variables "
            f"{variables}) with the teacher {teacher.name!r}. Give the "
            "student its own layers (a copy: `keras.models.clone_model`), "
            "or pass `allow_shared_layers=True` if the shared weights are "
            "meant to train with the student (a shared trunk)."
        )
    return layers, variables


def check_in_strategy_scope(student):
    """Under a `tf.distribute` strategy, the student's weights must have
    been made in its scope (Keras' rule; its own error is cryptic)."""
    import tensorflow as tf

    if not tf.distribute.has_strategy() or not student.weights:
        return
    extended = tf.distribute.get_strategy().extended
    if not extended.variable_created_in_scope(student.weights[0].value):
        raise ValueError(
            "Invalid value for argument `student`. Expected a student "
            "built (or loaded) inside `with strategy.scope():`, the "
            "`tf.distribute` strategy scope the Distiller is created in. "
            f"Received: {student.name!r}, whose weights were made outside "
            "it. Build or load the student inside the scope."
        )


def check_supervised_loss(loss, student_loss_weight):
    """A supervised loss is needed unless `student_loss_weight` is 0."""
    if loss is None and student_loss_weight > 0:
        raise ValueError(
            "Invalid value for argument `loss`. Expected the student's "
            "supervised loss, because student_loss_weight="
            f"{student_loss_weight} > 0 (set student_loss_weight=0 to "
            "distill without labels). Received: loss=None"
        )


def _same_inputs(t_shape, s_shape):
    if t_shape is None or s_shape is None:
        return True
    if len(t_shape) != len(s_shape):
        return False
    return all(
        a is None or b is None or a == b
        for a, b in zip(t_shape[1:], s_shape[1:])
    )


def check_models_for_losses(
    losses, teacher, student, teacher_view, student_view, preprocessing
):
    """Checks the built models against the losses that compare them.

    The teacher and the student must take the same inputs (unless the
    teacher has its own `preprocessing`) and, for a loss on logits, give
    the same number of classes; each loss checks the rest
    (`DistillationLoss.validate_models`).

    Args:
        losses: The resolved `DistillationLoss` list.
        teacher: The teacher `keras.Model`, or None.
        student: The student `keras.Model`.
        teacher_view: The teacher's `keras_distill._views.ModelView`.
        student_view: The student's `ModelView`.
        preprocessing: The teacher's preprocessing, or None.
    """
    from keras_distill._hub import check_same_tokenizer
    from keras_distill._utils import input_shape

    if teacher is None:
        for loss in losses:
            loss.validate_models(None, student)
        return
    t_shape = input_shape(teacher)
    s_shape = input_shape(student) or t_shape
    if preprocessing is None and not _same_inputs(t_shape, s_shape):
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
    if any(loss.needs_logits for loss in losses):
        check_same_tokenizer(teacher, student)
        t_classes, s_classes = teacher_view.classes(), student_view.classes()
    for loss in losses:
        loss.validate_models(teacher, student)
        if (
            loss.needs_logits
            and None not in (t_classes, s_classes)
            and t_classes != s_classes
        ):
            raise ValueError(
                f"Invalid teacher and student for `{type(loss).__name__}`. "
                "Expected both to output the same number of classes. "
                f"Received: teacher classes={t_classes}, student "
                f"classes={s_classes}"
            )


def check_positive(arg, value):
    """Returns `value` as a float if it is a finite number > 0."""
    if isinstance(value, bool) or not _is_number(value) or float(value) <= 0:
        raise ValueError(
            f"Invalid value for argument `{arg}`. Expected a positive "
            f"float. Received: {arg}={value!r}"
        )
    return float(value)


def check_int(arg, value, low=0):
    """Returns `value` if it is an integer >= `low`, else raises.

    Args:
        arg: The argument's name, for the message.
        value: The value to check.
        low: The smallest value allowed.

    Returns:
        `value`.

    Raises:
        ValueError: If `value` is not an integer (bools excluded) >= `low`.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(
            f"Invalid value for argument `{arg}`. Expected an integer >= "
            f"{low}. Received: {arg}={value!r}"
        )
    return value


def check_generation_alone(augment, generation):
    """Refuses augmentation together with generated tokens."""
    if augment is not None and generation is not None:
        raise ValueError(
            "Invalid arguments. Expected `augment` or `generation`, not both: "
            "generation continues token sequences, which augmentation of "
            f"inputs would change. Received: augment={augment!r}, "
            f"generation={generation!r}"
        )


def check_non_negative(arg, value):
    """Returns `value` as a float if it is a finite number >= 0."""
    if isinstance(value, bool) or not _is_number(value) or float(value) < 0:
        raise ValueError(
            f"Invalid value for argument `{arg}`. Expected a "
            f"non-negative float. Received: {arg}={value!r}"
        )
    return float(value)


def _is_number(value):
    if isinstance(value, (str, bytes)):
        return False
    try:
        value = float(value)
    except (TypeError, ValueError):
        return False
    return value == value and value not in (float("inf"), float("-inf"))
