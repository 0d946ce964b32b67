"""keras_distill: knowledge distillation for Keras 3 on TensorFlow.

The public names are listed in `__all__`:

- `keras_distill.Distiller`: a `keras.Model` that trains a student from a
  frozen teacher with `compile` / `fit` / `evaluate` / `predict`.
- `keras_distill.losses`: the distillation losses and their registry.
"""

from keras_distill import losses
from keras_distill.distiller import Distiller

__version__ = "0.1.0"

__all__ = ["Distiller", "losses", "__version__"]
