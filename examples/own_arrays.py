"""Bring your own arrays: save them as `.npz`, then distill from the CLI or
from Python.

The `.npz` file holds `x_train, y_train, x_test, y_test`. Images may be
uint8 (scaled to [0, 1]) or float; labels are integers or one-hot.
"""

import argparse
import subprocess

import numpy as np
from sklearn.datasets import load_digits

import keras_distill

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=10)
args = parser.parse_args()

# Your arrays (scikit-learn's digits stand in for them here).
digits = load_digits()
images = (digits.images * 16).clip(0, 255).astype("uint8")  # (n, 8, 8)
labels = digits.target
order = np.random.default_rng(0).permutation(len(images))
train, test = order[:1400], order[1400:]
np.savez(
    "my_digits.npz",
    x_train=images[train],
    y_train=labels[train],
    x_test=images[test],
    y_test=labels[test],
)

# From the command line:
subprocess.run(
    [
        "keras-distill",
        "demo",
        "--dataset",
        "my_digits.npz",
        "--teacher",
        "cnn-small",
        "--student",
        "mlp-tiny",
        "--epochs",
        str(args.epochs),
        "--teacher-epochs",
        str(args.epochs),
        "--run",
        "saved_models/my_digits",
    ],
    check=True,
)

# Or from Python, with the same data loader:
data = keras_distill.app.datasets.load("my_digits.npz", batch_size=32)
print("input shape", data.input_shape, "classes", data.num_classes)
