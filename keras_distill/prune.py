"""Magnitude pruning of a Keras 3 model, kept exact and small.

`Pruner` is a callback: during fine-tuning it zeroes the smallest-magnitude
weights of each prunable kernel (`Dense`, `Conv*`, `EinsumDense`,
`Embedding`) to a sparsity that grows along the polynomial schedule of Zhu
& Gupta (2017),

```
s(t) = s_f + (s_i - s_f) · (1 - (t - t_0) / (t_1 - t_0))³,  t_0 ≤ t ≤ t_1
```

updated every `frequency` steps, and re-applies its masks after every
training step so that the optimizer never revives a pruned weight. The
model itself stays a plain Keras model throughout (no wrapper layers):
`strip(model, pruner)` applies the final masks once more and returns it,
ready to save or export, its zeros staying zeros. Pruning works with a
`keras_distill.Distiller` as it is: prune the student
(`Pruner(target=distiller.student)`) while it learns from the unpruned
teacher.

Sparse weights save bytes only when stored compressed: `sparsity` and
`nonzero_count` say how sparse a model is, and
`keras_distill.export.tflite` files compress with gzip (see the
compression report).
"""

import keras
import numpy as np

from keras_distill._validation import check_int

PRUNABLE = (
    keras.layers.Dense,
    keras.layers.EinsumDense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Embedding,
)


def _check_sparsity(arg, value, high_inclusive=False):
    ok = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and 0.0 <= value
        and (value <= 1.0 if high_inclusive else value < 1.0)
    )
    if not ok:
        bound = "[0, 1]" if high_inclusive else "[0, 1)"
        raise ValueError(
            f"Invalid value for argument `{arg}`. Expected a sparsity in "
            f"{bound}. Received: {arg}={value!r}"
        )
    return float(value)


def prunable_kernels(model):
    """The kernels magnitude pruning applies to, in layer order.

    Biases and normalization weights are left dense (they are few and
    pruning them costs accuracy for no size).
    """
    kernels = []
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, PRUNABLE):
            weight = getattr(layer, "kernel", None)
            if weight is None:
                weight = getattr(layer, "embeddings", None)
            if weight is not None:
                kernels.append(weight)
    return kernels


def polynomial_sparsity(step, final, initial=0.0, begin=0, end=1000):
    """Zhu & Gupta's sparsity at `step` (see the module docstring)."""
    if step <= begin:
        return initial if step == begin else 0.0
    progress = min(1.0, (step - begin) / max(1, end - begin))
    return final + (initial - final) * (1.0 - progress) ** 3


def magnitude_mask(values, sparsity):
    """A 0/1 mask keeping the `1 - sparsity` largest |values|.

    Exactly `round(sparsity · size)` entries are zero (ties broken by
    position).
    """
    flat = np.abs(np.asarray(values, np.float64)).ravel()
    pruned = int(round(sparsity * flat.size))
    mask = np.ones(flat.size, np.float32)
    if pruned:
        mask[np.argsort(flat, kind="stable")[:pruned]] = 0.0
    return mask.reshape(np.shape(values))


class Pruner(keras.callbacks.Callback):
    """Prunes a model's kernels to a target sparsity during `fit`.

    Args:
        sparsity: The final sparsity of each kernel, in [0, 1).
        begin_step: The step at which pruning starts. Defaults to 0.
        end_step: The step at which the final sparsity is reached.
        frequency: Steps between two mask updates. Defaults to 100.
        initial_sparsity: The sparsity at `begin_step`. Defaults to 0.
        target: The model to prune, or None for the model being fitted
            (give `distiller.student` when fitting a `Distiller`).

    Raises:
        ValueError: If a sparsity is outside [0, 1), `end_step` is not
            after `begin_step`, or `frequency` is not a positive int.

    Example:

    ```python
    pruner = keras_distill.prune.Pruner(0.75, end_step=500, frequency=50)
    model.fit(train_ds, epochs=5, callbacks=[pruner])
    model = keras_distill.prune.strip(model, pruner)
    keras_distill.prune.sparsity(model)  # {'dense': 0.75, ...}
    ```
    """

    def __init__(
        self,
        sparsity,
        begin_step=0,
        end_step=1000,
        frequency=100,
        initial_sparsity=0.0,
        target=None,
    ):
        super().__init__()
        self.final_sparsity = _check_sparsity("sparsity", sparsity)
        self.initial_sparsity = _check_sparsity(
            "initial_sparsity", initial_sparsity
        )
        self.begin_step = check_int("begin_step", begin_step)
        self.end_step = check_int("end_step", end_step)
        if self.end_step <= self.begin_step:
            raise ValueError(
                "Invalid values for arguments `begin_step` and `end_step`. "
                "Expected end_step > begin_step. Received: "
                f"begin_step={begin_step}, end_step={end_step}"
            )
        self.frequency = check_int("frequency", frequency, low=1)
        self.target = target
        self.masks = None
        self.step = 0

    def _pruned(self):
        return self.target if self.target is not None else self.model

    def on_train_begin(self, logs=None):
        if self._start():
            self._update_masks()
            self.apply()

    def _start(self):
        """Makes masks of ones for the kernels, once the model is built
        (an unbuilt model is built by its first step). Returns whether the
        masks exist."""
        if self.masks is not None:
            return True
        model = self._pruned()
        kernels = prunable_kernels(model)
        if not kernels and model.built:
            raise ValueError(
                "Invalid model for `Pruner`. Expected Dense, Conv or "
                f"Embedding layers to prune. Received: none in {model.name!r}"
            )
        if kernels:
            self.masks = [keras.ops.ones(k.shape) for k in kernels]
        return bool(kernels)

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        started = self.masks is None
        if not self._start():
            return
        due = (self.step - self.begin_step) % self.frequency == 0
        scheduled = self.begin_step <= self.step <= self.end_step and due
        if started or scheduled or self.step == self.end_step:
            self._update_masks()
        self.apply()

    def current_sparsity(self):
        """The schedule's sparsity at the current step."""
        return polynomial_sparsity(
            self.step,
            self.final_sparsity,
            self.initial_sparsity,
            self.begin_step,
            self.end_step,
        )

    def _update_masks(self):
        if self.step < self.begin_step:
            return
        target = self.current_sparsity()
        kernels = prunable_kernels(self._pruned())
        self.masks = [
            keras.ops.convert_to_tensor(
                magnitude_mask(keras.ops.convert_to_numpy(k * m), target)
            )
            for k, m in zip(kernels, self.masks)
        ]

    def apply(self):
        """Zeroes every pruned weight (masks applied to the kernels), on
        the device, without a copy to the host."""
        kernels = prunable_kernels(self._pruned())
        for kernel, mask in zip(kernels, self.masks):
            kernel.assign(keras.ops.multiply(kernel, mask))


def strip(model, pruner=None):
    """The pruned model, ready to save or export: a plain Keras model
    whose pruned weights are zero (the final masks applied once more).

    Args:
        model: The pruned `keras.Model`.
        pruner: The `Pruner` that pruned it, or None (nothing to apply).

    Returns:
        `model` itself.
    """
    if pruner is not None and pruner.masks is not None:
        pruner.apply()
    return model


def sparsity(model):
    """The share of zero weights in each prunable kernel, by layer path."""
    return {
        kernel.path: float(np.mean(keras.ops.convert_to_numpy(kernel) == 0))
        for kernel in prunable_kernels(model)
    }


def nonzero_count(model):
    """The number of non-zero weights of a model."""
    return int(
        sum(
            np.count_nonzero(keras.ops.convert_to_numpy(w))
            for w in model.weights
        )
    )
