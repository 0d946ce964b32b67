"""Distill across machines with `tf.distribute.MultiWorkerMirroredStrategy`.

Start this script once per worker, each with its own `TF_CONFIG`: the same
cluster, a different task index. Here both workers run on this machine:

    python examples/multi_worker.py --launch-local 2

which starts two worker processes on free local ports and waits for them.
On real machines, set on each one

    TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]},
                "task": {"type": "worker", "index": 0}}'

(index 1 on the second) and run `python examples/multi_worker.py`. Every
worker ends with the same student; only the chief (index 0) saves it.
The command line does the same with `keras-distill distill --strategy
multi-worker`.
"""

import argparse
import json
import os
import socket
import subprocess
import sys

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=2)
parser.add_argument(
    "--launch-local",
    type=int,
    default=0,
    metavar="N",
    help="start N local workers on free ports and wait for them",
)
parser.add_argument("--output", default="multi_worker_student.keras")
args = parser.parse_args()

if args.launch_local:
    sockets = [socket.socket() for _ in range(args.launch_local)]
    for s in sockets:
        s.bind(("localhost", 0))
    workers = [f"localhost:{s.getsockname()[1]}" for s in sockets]
    for s in sockets:
        s.close()
    processes = []
    for index in range(args.launch_local):
        tf_config = {
            "cluster": {"worker": workers},
            "task": {"type": "worker", "index": index},
        }
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--epochs",
                    str(args.epochs),
                    "--output",
                    args.output,
                ],
                env=dict(os.environ, TF_CONFIG=json.dumps(tf_config)),
            )
        )
    sys.exit(max(p.wait() for p in processes))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_distill  # noqa: E402

strategy = tf.distribute.MultiWorkerMirroredStrategy()
task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
chief = task.get("index", 0) == 0

# Seeded pipelines keyed by the epoch of `fit` (its peek at a first batch
# under a strategy, or a restart from `keras.callbacks.BackupAndRestore`,
# does not move the order).
resumable = keras_distill.callbacks.ResumableData()
with resumable:
    data = keras_distill.app.datasets.load("digits", batch_size=64, seed=0)
with strategy.scope():
    teacher = keras_distill.app.zoo.teacher(
        "mlp-small", data.input_shape, data.num_classes
    )
    # Keras' own fit fails on several workers (keras-team/keras#20585);
    # the wrapper trains `teacher` there. The Distiller needs none.
    trainer = keras_distill.distribute.MultiWorkerModel(teacher)
    trainer.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
trainer.fit(
    data.train,
    epochs=args.epochs,
    verbose=2 if chief else 0,
    callbacks=[resumable],
)
with strategy.scope():
    distiller = keras_distill.Distiller(
        teacher,
        keras_distill.app.zoo.student(
            "mlp-tiny", data.input_shape, data.num_classes
        ),
        student_loss_weight=0.1,
    )
    distiller.compile(
        "adam",
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
distiller.fit(
    data.train,
    epochs=args.epochs,
    verbose=2 if chief else 0,
    callbacks=[resumable],
)
if chief:
    distiller.student.save(args.output)
    print(f"student saved to {args.output}")
