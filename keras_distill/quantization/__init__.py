"""Quantization-aware distillation: train the student as LiteRT runs it.

`quantization_aware(model)` returns a twin of a Keras model that shares
its weights and computes with LiteRT's int8 arithmetic: weights rounded
per output channel (symmetric, narrow range), activations rounded per
tensor to ranges tracked while training, batch normalization folded into
the layer before it. Distil into the twin with a `keras_distill.Distiller`
(float teacher, every loss and cache), then export it with
`keras_distill.export.tflite(twin, path, quantize="int8")`: the file takes
the ranges the twin learned (no representative data) and its check
compares it with the twin.

Example:

```python
twin = keras_distill.quantization.quantization_aware(student)
distiller = keras_distill.Distiller(teacher, twin)
distiller.compile("adam", loss)
distiller.fit(train_ds, epochs=1, verbose=0)
keras_distill.quantization.freeze_ranges(twin)
```
"""

from keras_distill.quantization._attention import QuantizedAttention
from keras_distill.quantization._layers import SCHEMES
from keras_distill.quantization._layers import ActivationQuantizer
from keras_distill.quantization._layers import QuantizedLayer
from keras_distill.quantization._twin import FLOAT_LAYERS
from keras_distill.quantization._twin import FreezeRanges
from keras_distill.quantization._twin import freeze_ranges
from keras_distill.quantization._twin import is_quantization_aware
from keras_distill.quantization._twin import quantization_aware
from keras_distill.quantization._wrappers import QuantizedEmbedding
from keras_distill.quantization._wrappers import QuantizedOperation
from keras_distill.quantization._wrappers import QuantizedOutput

__all__ = [
    "FLOAT_LAYERS",
    "SCHEMES",
    "ActivationQuantizer",
    "FreezeRanges",
    "QuantizedAttention",
    "QuantizedEmbedding",
    "QuantizedLayer",
    "QuantizedOperation",
    "QuantizedOutput",
    "freeze_ranges",
    "is_quantization_aware",
    "quantization_aware",
]
