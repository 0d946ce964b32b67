"""Export the student to SavedModel and TFLite/LiteRT, checked against Keras.

Both functions take the student (a `Distiller` is replaced by its student,
never exported whole), write atomically, and return an `ExportReport` that
says how big the file is and how closely it reproduces the Keras model.

The public names are the ones below, as `keras_distill.export.NAME`; the
modules behind them are private, one job each:

- `_saved_model`: `saved_model`, and the SavedModel write conversion uses.
- `_tflite`: `tflite` and `convert`, in every mode of `QUANTIZE_MODES`.
- `_prepared`: the model exported (a `Distiller`'s student; a string
  model from its token ids; a KerasHub task at a sequence length) and how
  the user's data reaches it.
- `_float32_twin`: a mixed-precision model's float32 twin, with the same
  weights.
- `_specs`: `InputSpecs`, and the data fed by them.
- `_runner`: `Runner`, a `.tflite` file in the LiteRT interpreter.
- `_parity`: the check of an exported model against Keras.
- `_report`: `ExportReport`.
- `_generate`: `generate`, greedy decoding in Keras or LiteRT.
"""

from keras_distill.export._generate import generate
from keras_distill.export._report import ExportReport
from keras_distill.export._runner import Runner
from keras_distill.export._saved_model import saved_model
from keras_distill.export._specs import InputSpecs
from keras_distill.export._tflite import QUANTIZE_MODES
from keras_distill.export._tflite import REPRESENTATIVE_SAMPLES
from keras_distill.export._tflite import convert
from keras_distill.export._tflite import tflite

__all__ = [
    "QUANTIZE_MODES",
    "REPRESENTATIVE_SAMPLES",
    "ExportReport",
    "InputSpecs",
    "Runner",
    "convert",
    "generate",
    "saved_model",
    "tflite",
]
