"""Your own trained teacher and your own image folder, from the command.

The script stands in for what you already have: it writes a folder of
32×32 RGB images in class subfolders (the layout Keras'
`image_dataset_from_directory` reads) and trains and saves a teacher on
it, `my_teacher.keras`. Then the command distils a student from that file
on that folder: the teacher is used as it is (never retrained, never
written to; a changed file is refused), the images are streamed from
disk, and the run ends with the usual report and TFLite files.

    python examples/own_teacher_and_folder.py --epochs 5
"""

import argparse
import os
import subprocess

import keras
import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=10)
args = parser.parse_args()

# 1. Your image folder: one subfolder per class (digits, drawn in colour).
digits = load_digits()
rng = np.random.default_rng(0)
for i, (image, label) in enumerate(zip(digits.images, digits.target)):
    folder = os.path.join("my_images", f"class_{label}")
    os.makedirs(folder, exist_ok=True)
    grey = tf.image.resize(image[..., None] / 16.0, (32, 32)).numpy()
    colour = grey * rng.uniform(0.5, 1.0, size=3)  # one tint per image
    pixels = (255 * colour).clip(0, 255).astype("uint8")
    tf.io.write_file(
        os.path.join(folder, f"{i:04d}.png"), tf.io.encode_png(pixels)
    )

# 2. Your trained teacher, saved as a file.
if not os.path.exists("my_teacher.keras"):
    images = keras.utils.image_dataset_from_directory(
        "my_images", image_size=(32, 32), batch_size=64, seed=0
    ).map(lambda x, y: (x / 255.0, y))
    teacher = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10),
        ],
        name="my_teacher",
    )
    teacher.compile(
        "adam",
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    teacher.fit(images, epochs=2 * args.epochs, verbose=2)
    teacher.save("my_teacher.keras")

# 3. Your student: a factory function the command imports from the
# working directory (`module:function`), called with the data's input
# shape and class count.
with open("my_student.py", "w") as f:
    f.write(
        "import keras\n\n\n"
        "def small_cnn(input_shape, num_classes):\n"
        "    return keras.Sequential([\n"
        "        keras.Input(input_shape),\n"
        "        keras.layers.Conv2D(8, 3, strides=2, activation='relu'),\n"
        "        keras.layers.Conv2D(16, 3, strides=2, activation='relu'),\n"
        "        keras.layers.GlobalAveragePooling2D(),\n"
        "        keras.layers.Dense(num_classes),\n"
        "    ], name='small_cnn')\n"
    )

# 4. The command on them: the teacher file, the student, the folder.
subprocess.run(
    [
        "keras-distill",
        "demo",
        "--dataset",
        "my_images",
        "--teacher",
        "my_teacher.keras",
        "--student",
        "my_student:small_cnn",
        "--epochs",
        str(args.epochs),
        "--run",
        "saved_models/my_images",
    ],
    check=True,
)
print(open("saved_models/my_images/report.md").read()[:600])
