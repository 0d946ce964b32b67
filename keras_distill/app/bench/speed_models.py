"""The models `keras-distill bench speed` times: our distiller,
`keras.distillation.Distiller`, the keras.io example's pattern, the
student alone and the bound of one bare `tf.function` step, each built
and compiled as its variant runs it (`keras_distill.app.bench.speed`).
"""

import keras
import tensorflow as tf
from keras import ops

from keras_distill import losses
from keras_distill.distiller import Distiller
from keras_distill.losses.logits import soft_kl

TEMPERATURE = 4.0
ALPHA = 0.1


def keras_io_distiller():
    """The keras.io example's Distiller (Keras 3 version), as a baseline."""

    class KerasIODistiller(keras.Model):
        def __init__(self, student, teacher):
            super().__init__()
            self.teacher = teacher
            self.student = student

        def compile(
            self,
            optimizer,
            metrics,
            student_loss_fn,
            distillation_loss_fn,
            alpha=0.1,
            temperature=3,
        ):
            super().compile(optimizer=optimizer, metrics=metrics)
            self.student_loss_fn = student_loss_fn
            self.distillation_loss_fn = distillation_loss_fn
            self.alpha = alpha
            self.temperature = temperature

        def compute_loss(
            self, x=None, y=None, y_pred=None, sample_weight=None, **kwargs
        ):
            teacher_pred = self.teacher(x, training=False)
            student_loss = self.student_loss_fn(y, y_pred)
            distillation_loss = self.distillation_loss_fn(
                ops.softmax(teacher_pred / self.temperature, axis=1),
                ops.softmax(y_pred / self.temperature, axis=1),
            ) * (self.temperature**2)
            return (
                self.alpha * student_loss + (1 - self.alpha) * distillation_loss
            )

        def call(self, x):
            return self.student(x)

    return KerasIODistiller


def bound_epoch(teacher, student, optimizer, dataset):
    """The `bound` variant: the least work an online distillation epoch
    can do."""
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(x, y):
        t = teacher(x, training=False)
        with tf.GradientTape() as tape:
            s = student(x, training=True)
            loss = ALPHA * ce(y, s) + (1 - ALPHA) * soft_kl(t, s, TEMPERATURE)
        variables = student.trainable_weights
        optimizer.apply_gradients(
            zip(tape.gradient(loss, variables), variables)
        )

    def epoch():
        for x, y in dataset:
            step(x, y)

    return epoch


def _keras_losses(feature):
    """`keras.distillation` losses: KD, and a feature loss if asked."""
    chosen = [
        keras.distillation.LogitsDistillation(
            temperature=TEMPERATURE, loss=keras.losses.KLDivergence()
        )
    ]
    if feature:
        chosen.append(_keras_feature_loss())
    return chosen


def _keras_feature_loss():
    return keras.distillation.FeatureDistillation(
        loss="mse", teacher_layer_name="logits", student_layer_name="logits"
    )


def ours(teacher, student, feature=False):
    chosen = [losses.LogitsDistillation(TEMPERATURE)]
    if feature:
        chosen.append(_keras_feature_loss())
    distiller = Distiller(teacher, student, chosen, student_loss_weight=ALPHA)
    distiller.compile("adam", _ce(), metrics=["accuracy"])
    return distiller


def keras_distiller(teacher, student, feature=False):
    distiller = keras.distillation.Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=_keras_losses(feature),
        student_loss_weight=ALPHA,
    )
    distiller.compile("adam", loss=_ce(), metrics=["accuracy"])
    return distiller


def keras_io(teacher, student):
    distiller = keras_io_distiller()(student, teacher)
    distiller.compile(
        optimizer=keras.optimizers.Adam(),
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
        student_loss_fn=_ce(),
        distillation_loss_fn=keras.losses.KLDivergence(),
        alpha=ALPHA,
        temperature=TEMPERATURE,
    )
    return distiller


def _ce():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def compiled_student(student):
    student.compile("adam", _ce(), metrics=["accuracy"])
    return student
