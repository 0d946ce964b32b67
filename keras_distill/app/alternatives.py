"""The other cheap ways to a better small model, for `keras-distill compare`.

Distillation is one way to train a small model better than from its
labels alone. `compare` sets it beside these, on the run's data, seed and
epochs, each measured like every other row:

- **label smoothing** (`LABEL_SMOOTHING`, 0.1): the student from scratch
  with smoothed one-hot targets (Müller et al., 2019);
- **input noise**: the student from scratch with Gaussian noise added to
  its training inputs, of standard deviation `NOISE_SCALE` (0.1) times
  the training inputs' own standard deviation (images and vectors only);
- **teacher-free KD** (`keras_distill.losses.TeacherFreeKD`, Yuan et al.,
  2020): the student distilled from a hand-made virtual teacher that puts
  `TEACHER_FREE_CORRECT_PROB` (0.9) on the true class, with the run's
  student loss weight;
- **transfer**: the teacher's first layers (a prefix, `transfer_model`)
  under a new head, sized to the student's parameter count as closely as
  the teacher's layers allow, trained with the prefix frozen for the
  run's epochs, then fine-tuned whole at a tenth of the learning rate.

Each student starts from the same initial weights as the student from
scratch (the run's seed) and reads the same pipeline.
"""

import keras
import numpy as np
from keras import ops

LABEL_SMOOTHING = 0.1
NOISE_SCALE = 0.1
TEACHER_FREE_CORRECT_PROB = 0.9
# The fine-tuning of the transfer model: its learning rate against the run's.
FINE_TUNE_LEARNING_RATE = 0.1


def smoothed_crossentropy(smoothing, classes):
    """Cross-entropy from logits against integer labels with smoothed
    one-hot targets: `(1 - smoothing) · one_hot + smoothing / classes`.

    Args:
        smoothing: The label smoothing, in [0, 1).
        classes: The number of classes.

    Returns:
        A loss function `(y_true, logits) -> per-example loss`.
    """

    def loss(y_true, y_pred):
        labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        return keras.losses.categorical_crossentropy(
            ops.one_hot(labels, classes),
            y_pred,
            from_logits=True,
            label_smoothing=smoothing,
        )

    return loss


def _fit(run, trainer, epochs, loss=None, optimizer=None):
    args = run._compile_args()
    trainer.compile(optimizer or args["optimizer"], loss or args["loss"])
    trainer.fit(
        run.train_dataset("student"), epochs=epochs, verbose=0, shuffle=False
    )


def label_smoothing(run, log=print):
    """The run's student from scratch with label smoothing 0.1."""
    c = run.config
    student = run._build("student")
    log(f"[compare] {c.student} with label smoothing {LABEL_SMOOTHING}")
    loss = smoothed_crossentropy(LABEL_SMOOTHING, run.data.num_classes)
    _fit(run, student, c.epochs, loss)
    return student


def noise_stddev(run):
    """The input noise's standard deviation, or None where the inputs
    are not floats (tokens)."""
    sample = np.asarray(run.train_sample())
    if sample.dtype.kind != "f":
        return None
    return float(NOISE_SCALE * sample.std())


def input_noise(run, log=print):
    """The run's student from scratch with Gaussian input noise during
    training (None for inputs that are not floats).

    Returns:
        `(student, stddev)`, or None.
    """
    c = run.config
    stddev = noise_stddev(run)
    if stddev is None:
        return None
    student = run._build("student")
    log(f"[compare] {c.student} with Gaussian input noise, σ={stddev:.4f}")
    inputs = keras.Input(tuple(run.data.input_shape))
    noisy = keras.layers.GaussianNoise(stddev, seed=c.seed)(inputs)
    _fit(run, keras.Model(inputs, student(noisy)), c.epochs)
    return student, stddev


def teacher_free(run, log=print):
    """The run's student distilled from a virtual teacher
    (`keras_distill.losses.TeacherFreeKD`)."""
    from keras_distill.distiller import Distiller
    from keras_distill.losses import TeacherFreeKD

    c = run.config.resolved()
    student = run._build("student")
    log(f"[compare] {c.student} with teacher-free KD")
    distiller = Distiller(
        None,
        student,
        TeacherFreeKD(TEACHER_FREE_CORRECT_PROB),
        student_loss_weight=c.alpha,
    )
    _fit(run, distiller, c.epochs)
    return student


def _head_params(features, hidden, classes):
    if hidden == 0:
        return (features + 1) * classes
    return (features + 1) * hidden + (hidden + 1) * classes


def transfer_model(teacher, target_params, classes, seed=None):
    """The teacher's first layers under a new head, about `target_params`
    parameters in all.

    The prefix is the deepest one (ending at any layer before the
    teacher's last, holding at least one weighted layer) that fits in
    `target_params` with a linear head; the head (flatten, then a ReLU
    layer of `hidden` units if room is left, then the logits) fills the
    rest. Where even the first weighted layer does not fit, it is the
    shallowest prefix with a linear head. The prefix shares the
    teacher's layers: pass a copy to keep the teacher unchanged.

    Args:
        teacher: A functional or Sequential `keras.Model`.
        target_params: The parameter count to come near (the student's).
        classes: The number of classes (logits).
        seed: The head's initializer seed.

    Returns:
        `(model, prefix_layer_name, hidden)`, or None for a model whose
        layers cannot be cut (subclassed) or without a weighted layer
        before its last.
    """
    try:
        layers = teacher.layers
        outputs = [layer.output for layer in layers[:-1]]
        # One input as a tensor, not a list of one (the structure callers
        # and the export give it).
        inputs = teacher.inputs
        inputs = inputs[0] if len(inputs) == 1 else inputs
    except (AttributeError, ValueError, TypeError):
        return None
    candidates = []
    weighted = 0
    for layer, output in zip(layers[:-1], outputs):
        weighted += int(bool(layer.weights))
        if not weighted or isinstance(layer, keras.layers.InputLayer):
            continue
        prefix = keras.Model(inputs, output)
        features = int(np.prod(output.shape[1:]))
        candidates.append((layer.name, prefix, features))
    if not candidates:
        return None
    fitting = [
        c
        for c in candidates
        if c[1].count_params() + _head_params(c[2], 0, classes)
        <= target_params
    ]
    name, prefix, features = fitting[-1] if fitting else candidates[0]
    room = target_params - prefix.count_params() - classes
    hidden = max(0, room // (features + 1 + classes)) if fitting else 0
    if hidden < classes:  # a narrower layer than the logits: linear instead
        hidden = 0
    def init(offset):  # a seed per layer: a seeded initializer repeats
        return keras.initializers.GlorotUniform(
            seed=None if seed is None else seed + offset
        )

    h = keras.layers.Flatten(name="transfer_flatten")(prefix.output)
    if hidden:
        h = keras.layers.Dense(
            hidden, "relu", kernel_initializer=init(0), name="transfer_hidden"
        )(h)
    logits = keras.layers.Dense(
        classes, kernel_initializer=init(1), name="transfer_logits"
    )(h)
    return keras.Model(inputs, logits, name="transfer"), name, hidden


def transfer(run, teacher, fine_tune_epochs, log=print):
    """The transfer students: a copy of the teacher's prefix under a new
    head (`transfer_model`), trained frozen, then fine-tuned.

    Returns:
        `(frozen, fine_tuned, prefix_layer_name)` (two `keras.Model`s),
        or None where the teacher cannot be cut.
    """
    c = run.config
    target = run._build("student").count_params()

    def cut():  # on a copy of the teacher, which stays unchanged
        copy = keras.models.clone_model(teacher)
        copy.set_weights(teacher.get_weights())
        keras.utils.set_random_seed(c.seed)
        return transfer_model(copy, target, run.data.num_classes, c.seed)

    made = cut()
    if made is None:
        log(
            "[compare] no transfer rows: the teacher is not a functional or "
            "Sequential model with a weighted layer before its last (a "
            "subclassed model, or one wrapped with its preprocessing)"
        )
        return None
    model, layer, hidden = made
    head = {"transfer_flatten", "transfer_hidden", "transfer_logits"}
    for each in model.layers:
        each.trainable = each.name in head
    log(
        f"[compare] transfer: the teacher up to {layer!r} + a new head "
        f"({hidden} hidden units), {model.count_params():,} parameters "
        f"(the student: {target:,}), frozen for {c.epochs} epochs"
    )
    _fit(run, model, c.epochs)
    frozen = cut()[0]  # the frozen stage's weights, kept apart
    frozen.set_weights(model.get_weights())
    for each in model.layers:
        each.trainable = True
    optimizer = run._optimizer()
    optimizer.learning_rate = c.learning_rate * FINE_TUNE_LEARNING_RATE
    log(f"[compare] transfer: fine-tuned whole, {fine_tune_epochs} epochs")
    _fit(run, model, fine_tune_epochs, optimizer=optimizer)
    return frozen, model, layer
