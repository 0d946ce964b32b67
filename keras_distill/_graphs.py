"""A model's functional graph, read: its symbolic outputs and their names,
the operations that make an output, the softmax that ends one, and a
replay of the graph that records intermediate features and the logits
before that softmax (one forward pass, the model's own weights).

Models whose last operation is a softmax are detected here: a
`keras.layers.Softmax` layer, an `Activation("softmax")` layer, any layer
built with `activation="softmax"` (the `Dense` head of every
`keras.applications` classifier), `keras.ops.softmax` in a functional
graph, also inside nested models.
"""

import threading

import keras

from keras_distill import _keras_internals as internals

# Where `_replay` stores the logits it finds before a softmax.
LOGITS = "__logits__"
_SWAP = threading.RLock()


def symbolic_output(model):
    """A model's symbolic output structure, or None if not known yet."""
    functional = graph(model)
    try:
        return (functional or model).output
    except (AttributeError, ValueError):
        return None


def output_names(model):
    """The names of a model's outputs, or None if not known before a call.

    Args:
        model: A `keras.Model`.

    Returns:
        `[]` for a single output; the dict keys of a dict output; the output
        layer names of a list output; None for a model whose outputs are
        only known once it runs (a subclassed model, one not built).
    """
    output = symbolic_output(model)
    if output is None:
        return None
    if isinstance(output, dict):
        return sorted(output)
    if isinstance(output, (list, tuple)):
        return list(model.output_names)
    return []


def graph(model):
    """The functional graph behind a Functional or Sequential model."""
    if isinstance(model, keras.Sequential):
        return internals.functional_graph(model)
    if internals.is_functional(model):
        return model
    return None


def layer_names(model):
    """Every layer name in `model`, nested models included, in order."""
    names = []
    for layer in getattr(model, "layers", []):
        names.append(layer.name)
        if isinstance(layer, keras.Model):
            names.extend(layer_names(layer))
    return names


def _is_softmax(operation):
    if isinstance(operation, keras.layers.Softmax):
        return operation.axis in (-1, [-1], (-1,))
    if _is_softmax_op(operation):
        return True
    return getattr(operation, "activation", None) is keras.activations.softmax


def _is_softmax_op(operation):
    """`keras.ops.softmax` called in a functional graph, on the last axis."""
    return (
        type(operation).__name__ == "Softmax"
        and not isinstance(operation, keras.layers.Layer)
        and getattr(operation, "axis", -1) in (-1, None)
    )


def final_operations(model, choice=None):
    """The operations that produce a model's chosen output, outside in.

    Args:
        model: A `keras.Model`.
        choice: The output (name or index) for a model with several.

    Returns:
        A list from the outermost operation (a nested single-output model
        is opened up) to the innermost one that produces the output, or
        None when the model has no inspectable graph.
    """
    output = symbolic_output(model) if graph(model) is not None else None
    if output is None:
        return None
    if isinstance(output, (dict, list, tuple)):
        try:
            output = select_output(
                output, choice, getattr(model, "output_names", None)
            )
        except ValueError:
            return None
    operation = internals.producing_operation(output)
    if operation is None:
        return None
    if (
        isinstance(operation, keras.Model)
        and graph(operation) is not None
        and len(keras.tree.flatten(operation.output)) == 1
    ):
        inner = final_operations(operation)
        if inner is not None:
            return [operation] + inner
    return [operation]


def softmax_head(model, choice=None):
    """The path to the softmax that ends a model's chosen output, or None.

    Args:
        model: A `keras.Model`.
        choice: The output (name or index) for a model with several.

    Returns:
        A list of operations from the outermost nested model to the layer
        that applies the softmax, or None when the output does not end in
        one (or the model has no inspectable graph).
    """
    path = final_operations(model, choice)
    if path and _is_softmax(path[-1]):
        return path
    return None


def ends_in_known_logits(model, choice=None):
    """Whether the chosen output is made by a layer with a non-softmax
    activation (a `Dense` or `Conv` head): logits, with no need to look
    at values. Subclassed models and opaque layers (`TFSMLayer`, `Lambda`)
    are not known."""
    path = final_operations(model, choice)
    if not path:
        return False
    activation = getattr(path[-1], "activation", None)
    return activation is not None and not _is_softmax(path[-1])


class _PreActivation(keras.layers.Layer):
    """Calls a layer with its activation off: its logits, not softmax.

    The layer's own weights are used; the swap is held under a lock so
    that replicas traced in parallel threads never see each other's.
    """

    def __init__(self, layer, **kwargs):
        super().__init__(name=f"{layer.name}_logits", **kwargs)
        self.head = layer
        self.supports_masking = True

    def call(self, *args, **kwargs):
        with _SWAP:
            activation = self.head.activation
            self.head.activation = keras.activations.linear
            try:
                return self.head(*args, **kwargs)
            finally:
                self.head.activation = activation

    def compute_output_spec(self, *args, **kwargs):
        return self.head.compute_output_spec(*args, **kwargs)


def _call_head(operation, args, kwargs, found):
    if isinstance(
        operation, (keras.layers.Softmax, keras.layers.Activation)
    ) or _is_softmax_op(operation):
        found[LOGITS] = args[0]
        return operation(*args, **kwargs)
    logits = _PreActivation(operation)(*args, **kwargs)
    found[LOGITS] = logits
    return keras.layers.Activation("softmax", name=f"{operation.name}_sm")(
        logits
    )


def replay(model, inputs, wanted, found, head):
    """Calls `model`'s layers on `inputs` symbolically, recording features.

    Nested models that hold a wanted layer (or the softmax head) are opened
    up and replayed the same way, so every layer still runs once; the
    outputs of wanted layers are stored in `found` by name, the head's
    logits under `LOGITS`.
    """
    if graph(model) is None:
        raise ValueError(
            "Invalid model for a feature loss. Expected Functional or "
            "Sequential models (nested ones included) whose layers can be "
            f"named. Received: the subclassed model {model.name!r}"
        )
    head = head or []

    def call(operation, *args, **kwargs):
        if head and operation is head[0] and len(head) == 1:
            outputs = _call_head(operation, args, kwargs, found)
        elif head and operation is head[0]:
            outputs = replay(operation, args[0], wanted, found, head[1:])
        elif isinstance(operation, keras.Model) and wanted & set(
            layer_names(operation)
        ):
            outputs = replay(operation, args[0], wanted, found, None)
        else:
            outputs = operation(*args, **kwargs)
        if operation.name in wanted:
            found.setdefault(operation.name, outputs)
        return outputs

    return internals.run_through_graph(graph(model), inputs, call)


def select_output(outputs, choice, names=None, role="model"):
    """The output `choice` names in a model's (possibly nested) output.

    Args:
        outputs: What the model returned: a tensor, a list or a dict.
        choice: None, a name or an index.
        names: The output names of a list output (`output_names`).
        role: For the message.

    Returns:
        One tensor.

    Raises:
        ValueError: If the choice does not fit the outputs.
    """
    if isinstance(outputs, dict):
        keys = sorted(outputs)
        if choice is None and len(keys) == 1:
            return outputs[keys[0]]
        if isinstance(choice, int) and -len(keys) <= choice < len(keys):
            return outputs[keys[choice]]
        if choice in outputs:
            return outputs[choice]
        raise ValueError(
            f"Ambiguous {role} outputs. Expected `{role}_output=` naming one "
            f"of the keys {keys}. Received: {role}_output={choice!r}"
        )
    if isinstance(outputs, (list, tuple)):
        if choice is None and len(outputs) == 1:
            return outputs[0]
        if isinstance(choice, int) and -len(outputs) <= choice < len(outputs):
            return outputs[choice]
        if isinstance(choice, str) and names and choice in names:
            return outputs[list(names).index(choice)]
        described = ", ".join(f"{i}: {n!r}" for i, n in enumerate(names or []))
        raise ValueError(
            f"Ambiguous {role} outputs. Expected `{role}_output=` naming one "
            f"of its {len(outputs)} outputs by index"
            + (f" or name ({described})" if names else "")
            + f". Received: {role}_output={choice!r}"
        )
    return outputs
