"""The recipes' default temperature and supervised weight, as plain data.

`keras_distill.recipes` takes its signatures' defaults from here, and the
`keras-distill` command reads them without importing TensorFlow (its
`--help` states them). One place, so the two cannot disagree.

- `reverse`: a small teacher for a large model (Yuan et al., 2020): T = 4,
  the labels at half weight.
- `born_again`: a model distilled into its own architecture (Furlanello
  et al., 2018): T = 1, as in the paper, the labels at half weight.
- `mutual`: deep mutual learning (Zhang et al., 2018): T = 1; each model's
  own loss has weight 1, so there is no `alpha`.
"""

REVERSE = {"temperature": 4.0, "alpha": 0.5}
BORN_AGAIN = {"temperature": 1.0, "alpha": 0.5}
MUTUAL = {"temperature": 1.0, "alpha": None}
