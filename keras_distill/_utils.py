"""Small helpers shared by the package: model shapes and atomic writes."""

import contextlib
import os
import shutil
import tempfile


def input_shape(model):
    """The full input shape of a single-input model (batch axis included).

    Args:
        model: A `keras.Model`.

    Returns:
        A tuple such as `(None, 28, 28, 1)`, or None when the model has no
        known input shape (a subclassed model never built).
    """
    inputs = getattr(model, "inputs", None)
    if inputs and len(inputs) == 1:
        return tuple(inputs[0].shape)
    from keras_distill._keras_internals import build_shapes

    shapes = build_shapes(model)
    if shapes and len(shapes) == 1:
        shape = next(iter(shapes.values()))
        if isinstance(shape, (list, tuple)):
            return (None,) + tuple(shape[1:])
    return None


def optional_import(module, extra, purpose):
    """Imports an optional dependency, or says which extra installs it.

    The library needs TensorFlow, Keras and NumPy only; datasets, plots,
    YAML configs and the LiteRT interpreter come with extras.

    Args:
        module: The module to import, e.g. `"ai_edge_litert.interpreter"`.
        extra: The `keras-distill` extra that installs it (`"export"`,
            `"app"`).
        purpose: What needs it, for the message.

    Returns:
        The imported module.

    Raises:
        ImportError: One line naming the install command.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"{purpose} needs `{module.split('.')[0]}`, an optional "
            f"dependency: pip install 'keras-distill[{extra}]'"
        ) from None


def _check_folder(path):
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as error:
            raise OSError(
                f"Cannot write {path!r}: its folder {folder!r} cannot be "
                f"created ({error.strerror or error})."
            ) from None
    return folder


@contextlib.contextmanager
def atomic_path(path, directory=False):
    """Yields a temporary path that replaces `path` only on success.

    Write the file (or, with `directory=True`, the folder) at the yielded
    path; when the block ends without an exception it is renamed onto
    `path` (an atomic rename on one file system). On an exception the
    temporary file or folder is removed and `path` is left as it was, so
    nothing half-written is ever left behind.

    Args:
        path: The final path.
        directory: Whether the artifact is a folder (a SavedModel).

    Yields:
        The temporary path to write.

    Raises:
        OSError: If the folder cannot be created or written, with a message
            that names it.
    """
    folder = _check_folder(path)
    base = os.path.basename(os.path.abspath(path))
    # Keep the extension last: some writers (Keras' `save`) check it.
    suffix = ".tmp" + os.path.splitext(base)[1]
    try:
        if directory:
            tmp = tempfile.mkdtemp(
                prefix=f".{base}.", suffix=suffix, dir=folder
            )
        else:
            fd, tmp = tempfile.mkstemp(
                prefix=f".{base}.", suffix=suffix, dir=folder
            )
            os.close(fd)
            os.chmod(tmp, 0o644)
    except OSError as error:
        raise OSError(
            f"Cannot write {path!r}: the folder {folder!r} is not writable "
            f"({error.strerror or error})."
        ) from None
    try:
        yield tmp
        if directory:
            if os.path.isdir(path):
                old = tmp + ".old"
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        else:
            os.replace(tmp, path)
    except BaseException:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def quiet_native_output():
    """Captures what native code prints to stdout/stderr inside the block.

    The TFLite converter and the SavedModel loader write progress lines
    from C++ straight to the process' file descriptors. They are held in a
    temporary file and dropped, unless the block raises: then they are
    written to stderr, since they may explain the error. TensorFlow's
    Python `INFO` lines ("Assets written to ...", which a notebook shows
    in the cell) are held back too.

    Yields:
        Nothing.
    """
    import logging
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError):
            pass
    logger = logging.getLogger("tensorflow")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            sink.seek(0)
            os.write(2, sink.read())
            raise
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            logger.setLevel(level)


def import_tensorflow_quietly():
    """Imports TensorFlow with its native start-up lines held back.

    TensorFlow's C++ logging prints device probing lines before its log
    level applies; they say nothing useful to a command-line user. On an
    import error they are shown.
    """
    with quiet_native_output():
        import tensorflow as tf

        tf.config.list_physical_devices()  # probes devices, quietly


def write_bytes(path, content):
    """Writes `content` to `path` atomically (see `atomic_path`)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())


def save_model(model, path, include_optimizer=False):
    """Saves a Keras model to a `.keras` file atomically.

    Args:
        model: A `keras.Model`.
        path: The `.keras` file.
        include_optimizer: Whether to keep the optimizer state (needed only
            to resume training; it doubles or triples the file). Without it
            the file holds an uncompiled copy with the same weights.
    """
    if not include_optimizer and getattr(model, "optimizer", None) is not None:
        try:
            copy = type(model).from_config(model.get_config())
            copy.set_weights(model.get_weights())
        except Exception:  # a model that cannot be rebuilt from its config
            copy = model
        model = copy
    with atomic_path(path) as tmp:
        model.save(tmp)


def predict(model, x, batch_size=256):
    """A model's outputs for an array, in eager batches.

    `model.predict` traces a new function for every freshly loaded model
    (and TensorFlow warns about retracing); for one pass over a test split
    plain calls are as fast and quiet.

    Args:
        model: A `keras.Model`.
        x: An array, batch axis first.
        batch_size: Examples per call.

    Returns:
        A NumPy array of outputs.
    """
    import numpy as np

    outputs = [
        np.asarray(model(x[i : i + batch_size], training=False))
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(outputs)


def write_text(path, text):
    """Writes `text` (UTF-8) to `path` atomically (see `atomic_path`)."""
    write_bytes(path, text.encode("utf-8"))


def nested_layers(model):
    """Every layer of `model`, nested layers and models included, outer
    first (through the public `layers` of each model)."""
    found, stack = [], list(getattr(model, "layers", []) or [])
    while stack:
        layer = stack.pop(0)
        found.append(layer)
        stack.extend(getattr(layer, "layers", []) or [])
    return found
