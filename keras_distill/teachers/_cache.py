"""`TeacherCache`: a teacher's outputs computed once and served beside
the inputs, full or top-k, in memory or on disk, keyed by fingerprints."""

import hashlib
import json
import os

import keras
import numpy as np

from keras_distill._utils import atomic_path
from keras_distill._validation import check_choice
from keras_distill._validation import check_int
from keras_distill._views import LOGITS
from keras_distill._views import ModelView
from keras_distill.augment import shift_images
from keras_distill.losses.divergences import TOP_K_VALUES
from keras_distill.losses.divergences import top_k_teacher
from keras_distill.pipelines import batch_keys
from keras_distill.pipelines import shuffled_batches
from keras_distill.pipelines import shuffled_positions

TEACHER_KEY = "teacher_outputs"
INPUT_KEY = "inputs"
ON_MISMATCH = ("rebuild", "error")


def fingerprint_model(model):
    """A SHA-256 digest of a model's weights (shapes and values)."""
    digest = hashlib.sha256()
    for weight in model.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
        digest.update(str(value.shape).encode())
        digest.update(str(value.dtype).encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def fingerprint_array(x):
    """A SHA-256 digest of an array (shape, dtype and bytes)."""
    x = np.ascontiguousarray(x)
    digest = hashlib.sha256()
    digest.update(str(x.shape).encode())
    digest.update(str(x.dtype).encode())
    digest.update(x.tobytes())
    return digest.hexdigest()


def _materialize(data):
    """`(x, y, sample_weight)` as NumPy structures from arrays or a dataset.

    A `tf.data.Dataset` (batched, of `x`, `(x,)`, `(x, y)` or
    `(x, y, sample_weight)`, of known or unknown but finite cardinality)
    is read to its end and its batches joined.
    """
    import tensorflow as tf

    if not isinstance(data, tf.data.Dataset):
        return keras.tree.map_structure(np.asarray, data), None, None
    if data.cardinality() == tf.data.INFINITE_CARDINALITY:
        raise ValueError(
            "Invalid value for argument `x`. Expected a finite dataset: the "
            "teacher's outputs are cached for every example once. Received: "
            "an infinite `tf.data.Dataset` (drop `.repeat()`, or "
            "`.take(n)` the batches to cache)"
        )
    parts = []
    for element in data:
        if not isinstance(element, tuple):
            element = (element,)
        parts.append(
            keras.utils.unpack_x_y_sample_weight(
                keras.tree.map_structure(np.asarray, element)
            )
        )
    if not parts:
        raise ValueError(
            "Invalid value for argument `x`. Expected a dataset with at "
            "least one batch. Received: an empty `tf.data.Dataset`"
        )

    def join(i):
        if parts[0][i] is None:
            return None
        return keras.tree.map_structure(
            lambda *a: np.concatenate(a), *[p[i] for p in parts]
        )

    return join(0), join(1), join(2)


def _fingerprint_structure(x):
    digest = hashlib.sha256()
    if isinstance(x, dict):
        for key in sorted(x):
            digest.update(key.encode())
            digest.update(fingerprint_array(x[key]).encode())
    else:
        for leaf in keras.tree.flatten(x):
            digest.update(fingerprint_array(leaf).encode())
    return digest.hexdigest()


def _length(x):
    leaves = keras.tree.flatten(x)
    shape = np.shape(leaves[0]) if leaves else ()
    return shape[0] if shape else 0


def _slice(x, start, stop):
    return keras.tree.map_structure(lambda a: a[start:stop], x)


class TeacherCache:
    """The teacher's outputs on a fixed set of inputs, computed once.

    Build it with the training inputs (arrays, or a finite `tf.data.Dataset`
    of `x`, `(x, y)` or `(x, y, sample_weight)` batches);
    `dataset(...)` then yields batches that carry the cached outputs beside
    the inputs, and a `keras_distill.Distiller` fitted on them never calls
    the teacher. Shuffling is safe: each example's outputs travel with it.

    What is stored is what the distiller's logits losses compare: the
    teacher's chosen output (`output=`, for a teacher with several) with a
    final softmax undone (the logits from before it), in float32. A
    `preprocessing` layer is applied to the inputs before the teacher, as
    `Distiller(teacher_preprocessing=...)` does online: pass the same one.

    The cache is keyed by example position and by fingerprints of the
    teacher's weights (and the preprocessing's), the chosen output and the
    inputs. Given `path`, it is stored there (`.npz`, written atomically)
    and reused when the fingerprints match; when they do not (another
    teacher, other data), it is rebuilt, or with `on_mismatch="error"` a
    `ValueError` says what changed.

    For large vocabularies, `top_k=k` keeps per position only the k
    largest teacher logits (float16) and their token ids (int32), plus the
    teacher's log-normaliser and the log of the probability outside those
    k (float32 each): `6k + 8` bytes a token instead of `4V` (`nbytes`
    tells). The logits losses then compare the two models over the top k
    and one "rest" bucket, or over the top k renormalised (`top_k_form`
    of `LogitsDistillation`, `ReverseKL`, `GeneralizedJSD`; formulas in
    `keras_distill.losses.divergences`); at `k = V` both equal the full
    loss.

    A fixed cache cannot follow random augmentation: the teacher's output
    for a shifted image is not its output for the original. With
    `views=K` the cache stores K shifted views of every input (random
    shifts of up to `pixels`, replayed exactly from seeds) and their
    outputs; `dataset()` then gives each example one of its K views each
    epoch, inputs and outputs matching.

    Args:
        teacher: A `keras.Model` (or an `Ensemble`); an unbuilt one is
            built on the first batch.
        x: The training inputs: a NumPy array (batch axis first), a dict of
            arrays, or a finite batched `tf.data.Dataset` whose labels and
            sample weights, if any, are kept for `dataset()`.
        batch_size: Batch size of the teacher's pass over arrays.
        path: Optional `.npz` file to store the cache in and reuse it from.
        views: 1 (the inputs as they are) or K > 1 shifted views per input.
        pixels: The largest shift of a view, for `views > 1`.
        seed: Seed of the views' shifts.
        on_mismatch: `"rebuild"` or `"error"`, when a stored cache does not
            match the teacher or the inputs.
        verbose: Show a progress bar while the teacher runs.
        preprocessing: Optional layer or callable applied to the inputs
            before the teacher only.
        output: The teacher's output to cache (name or index), for a
            teacher with several.
        top_k: None (every logit, float32) or a positive int k: the k
            largest logits per position, for large vocabularies.

    Raises:
        ValueError: For invalid arguments, an infinite or empty dataset, a
            stored cache that does not match with `on_mismatch="error"`, or
            a corrupted cache file.

    Example:

    ```python
    cache = keras_distill.teachers.TeacherCache(teacher, x_train)
    distiller = keras_distill.Distiller(teacher, student)
    distiller.compile("adam", loss, metrics=["accuracy"])
    distiller.fit(cache.dataset(x_train, y_train, batch_size=64), epochs=10)
    ```
    """

    def __init__(
        self,
        teacher,
        x,
        *,
        batch_size=256,
        path=None,
        views=1,
        pixels=2,
        seed=0,
        on_mismatch="rebuild",
        verbose=1,
        preprocessing=None,
        output=None,
        top_k=None,
    ):
        if not isinstance(teacher, keras.Model):
            raise ValueError(
                "Invalid value for argument `teacher`. Expected a "
                f"keras.Model. Received: teacher={teacher!r}"
            )
        x, self.y, self.sample_weight = _materialize(x)
        leaves = keras.tree.flatten(x)
        if (
            not leaves
            or any(np.ndim(a) < 1 for a in leaves)
            or not _length(x)
            or (not isinstance(x, dict) and np.ndim(leaves[0]) < 2)
        ):
            shape = np.shape(leaves[0]) if leaves else ()
            raise ValueError(
                "Invalid value for argument `x`. Expected a non-empty array "
                f"with a batch axis. Received: an array of shape {shape}"
            )
        if isinstance(views, bool) or not isinstance(views, int) or views < 1:
            raise ValueError(
                "Invalid value for argument `views`. Expected a positive int."
                f" Received: views={views!r}"
            )
        if views > 1 and (len(leaves) != 1 or np.ndim(leaves[0]) != 4):
            raise ValueError(
                "Invalid value for argument `views`. Shifted views need "
                "images shaped (n, height, width, channels). Received: "
                f"inputs of shape {np.shape(leaves[0])}"
            )
        check_choice("on_mismatch", on_mismatch, ON_MISMATCH)
        if preprocessing is not None and not callable(preprocessing):
            raise ValueError(
                "Invalid value for argument `preprocessing`. Expected a "
                "layer or callable applied to the teacher's inputs. "
                f"Received: preprocessing={preprocessing!r}"
            )
        if top_k is not None:
            check_int("top_k", top_k, low=1)
        self.teacher = teacher
        self.preprocessing = preprocessing
        self.output = output
        self.top_k = top_k
        self.x = x
        self.views = views
        self.pixels = int(pixels)
        self.seed = int(seed)
        self.batch_size = batch_size
        self.path = os.fspath(path) if path is not None else None
        if not teacher.built:
            teacher(self._teacher_inputs(_slice(x, 0, 2)), training=False)
        self.key = {
            "teacher": fingerprint_model(teacher),
            "data": _fingerprint_structure(x),
            "views": views,
            "pixels": self.pixels if views > 1 else 0,
            "seed": self.seed if views > 1 else 0,
            "output": output,
            "top_k": top_k,
            "preprocessing": fingerprint_model(preprocessing)
            if isinstance(preprocessing, keras.layers.Layer)
            else repr(preprocessing),
        }
        self.outputs = None
        self.rebuilt = False
        if self.path and os.path.exists(self.path):
            stored_key, outputs = _read(self.path)
            if stored_key == self.key:
                self.outputs = outputs
            elif on_mismatch == "error":
                changed = sorted(
                    k for k in self.key if stored_key.get(k) != self.key[k]
                )
                raise ValueError(
                    f"The teacher cache {self.path!r} was built for another "
                    f"{' and '.join(changed)}. Expected a cache of this "
                    "teacher on these inputs. Delete the file, or pass "
                    "on_mismatch='rebuild'."
                )
        if self.outputs is None:
            self.outputs = self._compute(x, verbose)
            self.rebuilt = True
            if self.path:
                _write(self.path, self.key, self.outputs)

    def _teacher_inputs(self, batch):
        if self.preprocessing is None:
            return batch
        return self.preprocessing(batch)

    def _compute(self, x, verbose):
        import tensorflow as tf

        view = ModelView(self.teacher, "teacher", output=self.output)
        n = _length(x)
        steps = self.views * int(np.ceil(n / self.batch_size))
        bar = keras.utils.Progbar(steps, unit_name="batch") if verbose else None
        outputs = []
        indices = tf.range(n)
        for index in range(self.views):
            chunks = []
            for start in range(0, n, self.batch_size):
                batch = _slice(x, start, start + self.batch_size)
                if self.views > 1:
                    batch = shift_view(
                        batch,
                        indices[start : start + self.batch_size],
                        index,
                        self.pixels,
                        self.seed,
                    )
                logits = view(
                    self._teacher_inputs(batch), training=False, convert=False
                )[LOGITS]
                logits = keras.ops.cast(logits, "float32")
                if self.top_k is None:
                    chunks.append(np.asarray(logits))
                else:
                    chunks.append(top_k_logits(logits, self.top_k))
                if bar:
                    bar.add(1)
            outputs.append(keras.tree.map_structure(_concat, *chunks))
        # Undeclared outputs that look like probabilities warn, read from
        # the cache (an ensemble's members are run on one batch).
        first = outputs[0]
        if self.top_k is None:
            view.check_probabilities(
                self._teacher_inputs(_slice(x, 0, 256)), chosen=first[:256]
            )
        return keras.tree.map_structure(_stack, *outputs)  # (views, n, ...)

    @property
    def nbytes(self):
        """The bytes the cached outputs take (in memory and on disk,
        before compression)."""
        return sum(a.nbytes for a in keras.tree.flatten(self.outputs))

    def dataset(
        self, x=None, y=None, batch_size=32, shuffle=True, seed=0, augment=None
    ):
        """Batches of `({"inputs": x, "teacher_outputs": t}, y[, w])`.

        Do not add random augmentation to the returned dataset: the cached
        outputs belong to the inputs as served. For shifted inputs build the
        cache with `views=K` (then `augment="shift"` is what it serves).

        Args:
            x: The same inputs the cache was built on (checked), or None
                for the inputs the cache holds (those read from a dataset).
            y: Labels, or None: the labels read with the inputs from a
                dataset, if any (else unlabelled distillation).
            batch_size: Batch size.
            shuffle: Reshuffle every epoch (seeded).
            seed: The shuffle seed (also picks the views each epoch).
            augment: None, or `"shift"` (needs a cache built with
                `views > 1`).

        Returns:
            A `tf.data.Dataset` for `Distiller.fit`; its batches carry the
            sample weights read from a dataset, if any, as their third
            element.

        Raises:
            ValueError: If `x` is not the array the cache was built on, or
                if augmentation is asked of a cache of unaugmented inputs.
        """
        import tensorflow as tf

        check_choice("augment", augment, (None, "shift"))
        if augment is not None and self.views == 1:
            raise ValueError(
                "Random augmentation cannot be used with a fixed teacher "
                "cache: the teacher's outputs would belong to other inputs "
                "than the student sees. Build the cache with `views=K` (K "
                "shifted views per input, replayed from seeds), or train "
                "online without a cache. Received: augment="
                f"{augment!r} with a cache of views=1"
            )
        weights = None
        if x is None:
            x = self.x
            if y is None:
                y, weights = self.y, self.sample_weight
        x = keras.tree.map_structure(np.asarray, x)
        if _fingerprint_structure(x) != self.key["data"]:
            raise ValueError(
                "Invalid value for argument `x`. Expected the inputs the "
                "teacher cache was built on (same values, same order). "
                "Received: other inputs of shape "
                f"{np.shape(keras.tree.flatten(x)[0])}"
            )
        n = _length(x)
        # Shuffled, batches come in the order of
        # `keras_distill.pipelines.pipeline` with the same seed. With
        # several views: batches of positions, then one gather per batch.
        if shuffle:
            index = shuffled_positions(n, batch_size, seed)
        else:
            index = tf.data.Dataset.range(n).batch(batch_size)
        inputs = keras.tree.map_structure(tf.constant, x)
        outputs = keras.tree.map_structure(tf.constant, self.outputs)
        labels = None if y is None else tf.constant(np.asarray(y))
        weights = None if weights is None else tf.constant(weights)
        views, pixels, view_seed = self.views, self.pixels, self.seed
        if views == 1:
            # One view: no per-batch keys to draw, a plain gather of the
            # outputs (the cheapest pipeline, as the student's own).
            outputs = keras.tree.map_structure(lambda t: t[0], outputs)

        def teacher_outputs(positions, view):
            if views == 1:
                return keras.tree.map_structure(
                    lambda t: tf.gather(t, positions), outputs
                )
            return keras.tree.map_structure(
                lambda t: tf.gather_nd(t, tf.stack([view, positions], axis=1)),
                outputs,
            )

        def lookup(positions, key):
            positions = tf.cast(positions, tf.int32)
            batch = keras.tree.map_structure(
                lambda t: tf.gather(t, positions), inputs
            )
            view = None
            if views > 1:  # each example's view this epoch
                view = tf.random.stateless_uniform(
                    tf.shape(positions), key, 0, views, tf.int32
                )
                batch = shift_view(batch, positions, view, pixels, view_seed)
            features = {
                INPUT_KEY: batch,
                TEACHER_KEY: teacher_outputs(positions, view),
            }
            if labels is None:
                return (features,)
            if weights is None:
                return features, tf.gather(labels, positions)
            return (
                features,
                tf.gather(labels, positions),
                tf.gather(weights, positions),
            )

        if views == 1:
            # The student's own pipeline, with the outputs beside the
            # inputs: a pass is one gather (see `shuffled_batches`).
            features = {INPUT_KEY: inputs, TEACHER_KEY: outputs}
            element = (features,)
            if labels is not None:
                element = (features, labels)
                if weights is not None:
                    element = (features, labels, weights)
            if shuffle:
                data = shuffled_batches(element, batch_size, seed)
            else:
                # Sliced example by example: no second copy of the cache.
                data = tf.data.Dataset.from_tensor_slices(element)
                data = data.batch(batch_size)
        else:
            data = tf.data.Dataset.zip((index, batch_keys(seed + 1)))
            data = data.map(lookup, num_parallel_calls=tf.data.AUTOTUNE)
            steps = -(-n // batch_size)  # the zip with endless keys hides it
            data = data.apply(tf.data.experimental.assert_cardinality(steps))
        return data.prefetch(tf.data.AUTOTUNE)


def shift_view(images, indices, view, pixels, seed):
    """Replays view `view` of the images at `indices`: a shift of up to
    `pixels` pixels drawn from a stateless seed of (seed, view, index).

    Args:
        images: float tensor `(batch, height, width, channels)`.
        indices: int tensor `(batch,)`, the examples' positions.
        view: The view number: an int, or an int tensor `(batch,)` with one
            view per example.
        pixels: The largest shift.
        seed: The cache's seed.

    Returns:
        The shifted images, zero-filled at the edges.
    """
    import tensorflow as tf

    indices = tf.cast(indices, tf.int32)
    view = tf.broadcast_to(tf.cast(view, tf.int32), tf.shape(indices))

    def offset(key):
        return tf.random.stateless_uniform(
            (2,), seed=key, minval=0, maxval=2 * pixels + 1, dtype=tf.int32
        )

    keys = tf.stack([seed * 1000003 + view, indices], axis=1)
    offsets = tf.map_fn(offset, keys, fn_output_signature=tf.int32)
    return shift_images(images, offsets, pixels)


def top_k_logits(logits, k):
    """The top-k form of a batch of logits `(..., V)`, as NumPy arrays.

    Returns:
        A dict: `top_k_values` (float16 `(..., k)`), `top_k_indices`
        (int32), `log_normalizer` (float32 `(...)`, the log-sum-exp of all
        V logits) and `log_rest` (float32, the log of the probability
        outside the top k, summed directly; -1e4 when empty).
    """
    top = {key: np.asarray(v) for key, v in top_k_teacher(logits, k).items()}
    top[TOP_K_VALUES] = top[TOP_K_VALUES].astype(np.float16)
    return top


def _concat(*parts):
    return np.concatenate(parts)


def _stack(*parts):
    return np.stack(parts)


def _write(path, key, outputs):
    if isinstance(outputs, dict):
        arrays = {f"outputs__{name}": a for name, a in outputs.items()}
    else:
        arrays = {"outputs": outputs}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, key=np.array(json.dumps(key)), **arrays)


def _read(path):
    try:
        with np.load(path, allow_pickle=False) as npz:
            key = json.loads(str(npz["key"]))
            if "outputs" in npz.files:
                outputs = npz["outputs"]
            else:
                outputs = {
                    name.split("__", 1)[1]: npz[name]
                    for name in npz.files
                    if name.startswith("outputs__")
                }
    except Exception as error:  # zip, npy and json errors all mean corrupt
        raise ValueError(
            f"The teacher cache {path!r} is corrupted or not a teacher cache "
            f"({type(error).__name__}: {error}). Delete it to rebuild it."
        ) from None
    return key, outputs
