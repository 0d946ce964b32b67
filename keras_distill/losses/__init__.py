"""Distillation losses: what the student is taught to match.

Every loss is a `keras_distill.losses.DistillationLoss` and is known by name
to `keras_distill.losses.get` (see `known_names()`).
"""

from keras_distill.losses.base import DistillationLoss
from keras_distill.losses.base import get
from keras_distill.losses.base import known_names
from keras_distill.losses.base import register
from keras_distill.losses.compat import KerasDistillationLoss
from keras_distill.losses.compat import from_keras
from keras_distill.losses.logits import LogitsDistillation
from keras_distill.losses.logits import SoftTargetDistillation
from keras_distill.losses.logits import soft_kl

__all__ = [
    "DistillationLoss",
    "KerasDistillationLoss",
    "LogitsDistillation",
    "SoftTargetDistillation",
    "from_keras",
    "get",
    "known_names",
    "register",
    "soft_kl",
]
