"""Every access to a private Keras attribute, in one place.

keras_distill uses Keras' public API wherever one exists. What remains is
here, one small function per private name, each covered by a test named
after it (`tests/test_keras_internals.py`), so that a Keras release that
changes one fails a single named test instead of a training run. Written
against Keras 3.8 (with TensorFlow 2.18, the oldest supported) through
Keras 3.15 (with TensorFlow 2.21); `.ci/run` runs those tests on both
ends. Where the releases differ, the function here covers both:

- Keras 3.8's `Function._run_through_graph(inputs, operation_fn,
  call_fn=None)` requires `operation_fn`, which later releases default
  to the identity; `run_through_graph` always passes it.

Each function names the private attribute it reads and why no public
API does the job:

- `run_through_graph`, `is_functional`: `Functional._run_through_graph`
  (replay a graph with one call per layer: features and logits from one
  forward pass).
- `functional_graph`: `Sequential._functional` (the graph of a built
  `Sequential`).
- `producing_operation`: `KerasTensor._keras_history` (the layer that made
  a model's output: a softmax head).
- `keras_mask`: `Tensor._keras_mask` (the mask Keras attached).
- `build_shapes`: `Layer._build_shapes_dict` (the input shape a
  subclassed model was built with).
- `compile_loss`: `Trainer._compile_loss` (the compiled supervised loss,
  called with sample weights).
- `loss_tracker`: `Trainer._loss_tracker` (the logged `loss` metric).
- `set_compile_option`: `Trainer._compile_config` (extra `compile()`
  arguments saved with the model).
- `untrack_variable`: `Layer._untrack_variable` (drop the variables of
  replaced losses).
- `distribute_strategy_or_none`: `Trainer._distribute_strategy` (whether
  a strategy scope created the model).
- `SYMBOLIC_BUILD`: `Trainer._maybe_symbolic_build`, the hook
  `keras_distill.distribute.MultiWorkerBuild` overrides.
"""

SYMBOLIC_BUILD = "_maybe_symbolic_build"


def _same_operation(operation):
    return operation


def run_through_graph(functional, inputs, call_fn):
    """Replays a Functional model's graph, calling `call_fn(op, *args,
    **kwargs)` for each operation instead of the operation itself.

    `operation_fn` is passed explicitly: Keras 3.8 requires it (its
    signature is `(inputs, operation_fn, call_fn=None)`), later releases
    default it to the identity (`operation_fn=lambda op: op`).
    """
    return functional._run_through_graph(
        inputs, operation_fn=_same_operation, call_fn=call_fn
    )


def is_functional(model):
    """Whether `model` has a replayable functional graph."""
    return hasattr(model, "_run_through_graph") and hasattr(
        model, "_nodes_by_depth"
    )


def functional_graph(sequential):
    """The Functional graph of a built `keras.Sequential`, or None."""
    return getattr(sequential, "_functional", None)


def producing_operation(tensor):
    """The operation (layer) that produced a symbolic tensor, or None."""
    history = getattr(tensor, "_keras_history", None)
    return getattr(history, "operation", None)


def keras_mask(tensor):
    """The Keras mask attached to a tensor by a masking layer, or None."""
    return getattr(tensor, "_keras_mask", None)


def build_shapes(model):
    """The `{argument: shape}` a layer was built with, or None."""
    return getattr(model, "_build_shapes_dict", None)


def compile_loss(model):
    """The `CompileLoss` `compile(loss=...)` made, or None."""
    return getattr(model, "_compile_loss", None)


def loss_tracker(model):
    """The `Mean` metric behind the logged `loss`."""
    return model._loss_tracker


def set_compile_option(model, key, value):
    """Saves an extra `compile()` argument with the model's compile config,
    so that `compile_from_config` receives it on load."""
    model._compile_config.config[key] = value


def untrack_variable(layer, variable):
    """Stops `layer` from tracking (and saving) `variable`."""
    layer._untrack_variable(variable)


def distribute_strategy_or_none(model):
    """The strategy whose scope created `model`, or None outside one."""
    return model._distribute_strategy
