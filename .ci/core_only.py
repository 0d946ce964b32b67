"""The library with its core dependencies only (TensorFlow, Keras, NumPy).

Run by `.ci/run` in a virtual environment where `pip install -e .`
installed no extra: `import keras_distill` works, a distiller trains,
saves and reloads, and an optional part says which extra it needs.
"""

import importlib.util
import os
import tempfile

OPTIONAL = (
    "ai_edge_litert",
    "matplotlib",
    "mlxtend",
    "sklearn",
    "tensorflow_datasets",
    "yaml",
)
present = [m for m in OPTIONAL if importlib.util.find_spec(m) is not None]
assert not present, f"not a core-only environment: {present} installed"

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_distill  # noqa: E402


def mlp(width, seed):
    init = keras.initializers.GlorotUniform(seed=seed)
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(width, "relu", kernel_initializer=init)(inputs)
    return keras.Model(inputs, keras.layers.Dense(3)(hidden))


rng = np.random.default_rng(0)
x = rng.normal(size=(64, 6)).astype("float32")
y = rng.integers(0, 3, 64)
distiller = keras_distill.Distiller(mlp(16, 1), mlp(4, 2))
distiller.compile(
    "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True)
)
history = distiller.fit(x, y, epochs=2, batch_size=16, verbose=0)
assert np.isfinite(history.history["loss"]).all()
with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, "distiller.keras")
    distiller.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), distiller.predict(x, verbose=0), atol=1e-6
    )
try:
    keras_distill.export.Runner("student.tflite")
except ImportError as error:
    assert "pip install 'keras-distill[export]'" in str(error), error
else:
    raise AssertionError("Runner worked without ai-edge-litert")
print("core-only install: import, fit, save, reload: OK")
