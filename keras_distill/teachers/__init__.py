"""Teachers: several models as one (`Ensemble`), and outputs computed once
(`TeacherCache`).

A `TeacherCache` runs the teacher over the training inputs once and keeps
its outputs beside the inputs; a `Distiller` fed from `cache.dataset(...)`
reads them from the batch and never calls the teacher.
"""

from keras_distill.teachers._cache import INPUT_KEY
from keras_distill.teachers._cache import ON_MISMATCH
from keras_distill.teachers._cache import TEACHER_KEY
from keras_distill.teachers._cache import TeacherCache
from keras_distill.teachers._cache import fingerprint_array
from keras_distill.teachers._cache import fingerprint_model
from keras_distill.teachers._cache import shift_view
from keras_distill.teachers._cache import top_k_logits
from keras_distill.teachers._ensemble import Ensemble

__all__ = [
    "INPUT_KEY",
    "ON_MISMATCH",
    "TEACHER_KEY",
    "Ensemble",
    "TeacherCache",
    "fingerprint_array",
    "fingerprint_model",
    "shift_view",
    "top_k_logits",
]
