"""Distill a small student from a larger teacher with `fit`, in a notebook.

Run it as a script (`python examples/distill_with_fit.py`) or paste the
cells into a notebook. It uses the MNIST-5k digits that ship with the
install, so it needs no network.
"""

import argparse

import keras

import keras_distill

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=10)
args = parser.parse_args()

# %% Data: tf.data pipelines, input shape and class count.
data = keras_distill.app.datasets.load(
    "mnist5k", batch_size=64, validation_split=0.1
)
ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

# Random shifts of up to 2 pixels. Applied in the pipeline, so during
# distillation the teacher and the student see the same shifted batch.
shifted = keras_distill.pipelines.shift_augment(data.train, seed=0)

# %% A teacher (trained here; normally you load yours).
teacher = keras_distill.app.zoo.build(
    "cnn-medium", data.input_shape, data.num_classes, seed=0
)
teacher.compile("adam", ce, metrics=["accuracy"])
teacher.fit(shifted, epochs=args.epochs, verbose=2, shuffle=False)

# %% Distill a smaller student: an MLP with 78% of the teacher's weights.
student = keras_distill.app.zoo.build(
    "mlp-compact", data.input_shape, data.num_classes, seed=1
)
distiller = keras_distill.Distiller(
    teacher=teacher,
    student=student,
    distillation_losses=keras_distill.losses.LogitsDistillation(
        temperature=4.0
    ),
    student_loss_weight=0.1,
)
distiller.compile("adam", ce, metrics=["accuracy"])
history = distiller.fit(
    shifted,
    validation_data=data.validation,
    epochs=args.epochs,
    verbose=2,
    shuffle=False,
)

# %% Evaluate the student (evaluate() never runs the teacher) and save it.
print("teacher:", teacher.evaluate(data.test, verbose=0, return_dict=True))
print("student:", distiller.evaluate(data.test, verbose=0, return_dict=True))
student.save("distilled_student.keras")
