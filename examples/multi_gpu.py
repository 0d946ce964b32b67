"""Distill on every GPU of one machine with `tf.distribute.MirroredStrategy`.

Create and compile the distiller inside the strategy's scope; `fit` then
splits each global batch over the replicas. Every loss term is scaled for
the number of replicas, so the result equals a one-device run on the same
global batch. On a machine without GPUs the strategy uses the CPU.

    python examples/multi_gpu.py --epochs 2
"""

import argparse

import keras
import tensorflow as tf

import keras_distill

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=2)
parser.add_argument("--batch-size", type=int, default=64)
args = parser.parse_args()

strategy = tf.distribute.MirroredStrategy()
print(f"{strategy.num_replicas_in_sync} replica(s) in sync")

# Seeded pipelines keyed by the epoch: `fit` under a strategy peeks at a
# first batch before training, which must not move the epochs' order.
resumable = keras_distill.callbacks.ResumableData()
with resumable:
    data = keras_distill.app.datasets.load(
        "digits", batch_size=args.batch_size, seed=0
    )
with strategy.scope():
    teacher = keras_distill.app.zoo.teacher(
        "mlp-small", data.input_shape, data.num_classes
    )
    teacher.compile(
        "adam",
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
teacher.fit(data.train, epochs=args.epochs, verbose=2, callbacks=[resumable])

with strategy.scope():
    student = keras_distill.app.zoo.student(
        "mlp-tiny", data.input_shape, data.num_classes
    )
    distiller = keras_distill.Distiller(
        teacher, student, "kd", student_loss_weight=0.1
    )
    distiller.compile(
        "adam",
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
distiller.fit(data.train, epochs=args.epochs, verbose=2, callbacks=[resumable])
print(distiller.evaluate(data.test, verbose=0, return_dict=True))
