"""Distillation losses: what the student is taught to match.

Every loss is a `keras_distill.losses.DistillationLoss` and is known by name
to `keras_distill.losses.get` (see `known_names()`).
"""

from keras_distill.losses.base import DistillationLoss
from keras_distill.losses.base import merge_mask
from keras_distill.losses.base import weighted_mean
from keras_distill.losses.compat import KerasDistillationLoss
from keras_distill.losses.compat import from_keras
from keras_distill.losses.features import AttentionTransfer
from keras_distill.losses.features import FeatureDistillation
from keras_distill.losses.features import RelationalDistillation
from keras_distill.losses.features import attention_map
from keras_distill.losses.features import rkd
from keras_distill.losses.labels import DKD
from keras_distill.losses.labels import TeacherFreeKD
from keras_distill.losses.labels import dkd
from keras_distill.losses.logits import GeneralizedJSD
from keras_distill.losses.logits import LogitsDistillation
from keras_distill.losses.logits import ReverseKL
from keras_distill.losses.logits import SoftTargetDistillation
from keras_distill.losses.logits import soft_kl
from keras_distill.losses.registry import get
from keras_distill.losses.registry import known_names
from keras_distill.losses.registry import register

__all__ = [
    "AttentionTransfer",
    "DKD",
    "DistillationLoss",
    "FeatureDistillation",
    "GeneralizedJSD",
    "KerasDistillationLoss",
    "LogitsDistillation",
    "RelationalDistillation",
    "ReverseKL",
    "SoftTargetDistillation",
    "TeacherFreeKD",
    "attention_map",
    "dkd",
    "from_keras",
    "get",
    "known_names",
    "merge_mask",
    "register",
    "rkd",
    "soft_kl",
    "weighted_mean",
]
