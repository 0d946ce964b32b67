"""Distill, export the student to TFLite (float32 and int8), and run the
`.tflite` file with the LiteRT interpreter on a few test images.
"""

import argparse

import keras
import numpy as np
from ai_edge_litert.interpreter import Interpreter

import keras_distill

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=5)
args = parser.parse_args()

data = keras_distill.app.datasets.load("mnist5k", batch_size=64)
ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
teacher = keras_distill.app.zoo.build("mlp-large", data.input_shape, 10, seed=0)
teacher.compile("adam", ce)
teacher.fit(data.train, epochs=args.epochs, verbose=2, shuffle=False)
student = keras_distill.app.zoo.build("cnn-small", data.input_shape, 10, seed=1)
distiller = keras_distill.Distiller(teacher, student, student_loss_weight=0.1)
distiller.compile("adam", ce, metrics=["accuracy"])
distiller.fit(data.train, epochs=args.epochs, verbose=2, shuffle=False)

# Export: passing the distiller exports its student, never the teacher.
arrays = data.arrays
for mode in (None, "int8"):
    report = keras_distill.export.tflite(
        distiller,
        f"student_{mode or 'float32'}.tflite",
        quantize=mode,
        representative_data=arrays.x_train,  # real inputs calibrate int8
        check_data=(arrays.x_test, arrays.y_test),
    )
    print(
        f"{mode or 'float32':8s} {report.bytes / 1024:7.1f} KB  "
        f"accuracy {report.accuracy:.3f} (Keras {report.keras_accuracy:.3f})  "
        f"argmax agreement {report.argmax_agreement:.3f}  "
        f"{report.latency_ms:.3f} ms/image"
    )

# Run the int8 file by hand with the LiteRT interpreter.
interpreter = Interpreter(model_path="student_int8.tflite", num_threads=1)
interpreter.allocate_tensors()
inp = interpreter.get_input_details()[0]
out = interpreter.get_output_details()[0]
for image, label in zip(arrays.x_test[:5], arrays.y_test[:5]):
    interpreter.set_tensor(inp["index"], image[None].astype(np.float32))
    interpreter.invoke()
    logits = interpreter.get_tensor(out["index"])[0]
    print(f"label {label}  predicted {int(np.argmax(logits))}")
