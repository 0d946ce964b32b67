"""Distillation recipes: reverse KD, born-again networks, mutual learning.

- `reverse_distill`: a trained small model teaches a large one (Yuan et
  al., CVPR 2020: even a weaker teacher regularises a stronger student).
- `born_again`: a model distilled into a fresh copy of its own
  architecture, generation after generation (Furlanello et al., ICML
  2018), and the ensemble of the generations.
- `MutualLearning`: several students trained together, each also matching
  the others' current predictions (Zhang et al., CVPR 2018).

Function matching (Beyer et al., CVPR 2022) is the `Distiller` with
`augment=keras_distill.augment.ConsistentAugment([...])`.
"""

from keras_distill.recipes._generations import BornAgain
from keras_distill.recipes._generations import Trained
from keras_distill.recipes._generations import born_again
from keras_distill.recipes._generations import generation
from keras_distill.recipes._generations import reverse_distill
from keras_distill.recipes._mutual import MutualLearning
from keras_distill.recipes._mutual import mutual_loss

__all__ = [
    "BornAgain",
    "MutualLearning",
    "Trained",
    "born_again",
    "generation",
    "mutual_loss",
    "reverse_distill",
]
