"""Seeded `tf.data` pipelines: shuffles and augmentation that replay.

Every random draw here is keyed by a seed and the pass alone (not by
TensorFlow's global seed), so two pipelines built with one seed serve the
same batches, and a `keras_distill.callbacks.ResumableData` block can set
the pass a resumed `fit` reads.
"""

import threading

import tensorflow as tf

from keras_distill.augment import shift_images

# The pass generators that `seeded_passes` makes are appended to every list
# of `_recorders.active` (see `keras_distill.callbacks.ResumableData`).
_recorders = threading.local()


def record_passes(target):
    """Appends `(generator, seed)` of every later `seeded_passes` to the
    list `target`, until `stop_recording(target)`."""
    if not hasattr(_recorders, "active"):
        _recorders.active = []
    _recorders.active.append(target)


def stop_recording(target):
    _recorders.active = [t for t in _recorders.active if t is not target]


def pipeline(x, y, batch_size, shuffle=False, seed=0):
    """A batched, prefetched `tf.data.Dataset` of `(x, y)` from arrays.

    Args:
        x: Inputs.
        y: Labels.
        batch_size: Positive int.
        shuffle: Whether to reshuffle every epoch, in an order that depends
            on `seed` alone (see `seeded_passes`).
        seed: The shuffle seed.

    Returns:
        A `tf.data.Dataset`.
    """
    if not shuffle:
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
        return ds.prefetch(tf.data.AUTOTUNE)
    x, y = tf.convert_to_tensor(x), tf.convert_to_tensor(y)
    return shuffled_batches((x, y), batch_size, seed).prefetch(
        tf.data.AUTOTUNE
    )


# Up to this many bytes, `shuffled_batches` gathers a whole pass at once.
WHOLE_PASS_BYTES = 64 * 2**20


def shuffled_batches(tensors, batch_size, seed):
    """Batches of `tensors` (a structure of tensors with a common first
    axis), reshuffled every pass in the order of `shuffled_positions`.

    Up to `WHOLE_PASS_BYTES`, each pass is one gather of every example in
    its new order straight into its batches (`batched`): on a small
    student this is cheaper than a gather per batch (about 12 ms less a
    pass over 5,000 MNIST images on two CPU cores). Larger data is
    gathered batch by batch, so that no second copy of it is held.

    Args:
        tensors: A structure of tensors.
        batch_size: Positive int; the last batch may be smaller.
        seed: The shuffle seed.

    Returns:
        A `tf.data.Dataset` of batches with the structure of `tensors`,
        with a known cardinality.
    """
    flat = tf.nest.flatten(tensors)
    n = int(flat[0].shape[0])
    steps = -(-n // batch_size)

    def take(positions):
        return tf.nest.map_structure(
            lambda t: tf.gather(t, positions), tensors
        )

    if sum(t.shape.num_elements() * t.dtype.size for t in flat) > (
        WHOLE_PASS_BYTES
    ):
        return shuffled_positions(n, batch_size, seed).map(
            take, num_parallel_calls=tf.data.AUTOTUNE
        )

    def one_pass(key):
        order = tf.random.experimental.stateless_shuffle(tf.range(n), key)
        return batched(tensors, batch_size, order)

    return seeded_passes(seed, one_pass).apply(
        tf.data.experimental.assert_cardinality(steps)
    )


def batched(tensors, batch_size, order=None):
    """Batches of `tensors` (a structure of tensors with a common first
    axis), in `order`, the last one smaller if the batch size does not
    divide their length: the batches of
    `Dataset.from_tensor_slices(gathered).batch(batch_size)`, gathered
    straight into their batches, one dataset element a batch instead of
    one an example. The dataset holds that gathered copy of `tensors`
    (`shuffled_batches` uses it up to `WHOLE_PASS_BYTES` only).

    Args:
        tensors: A structure of tensors whose first axis has a known
            length `n`.
        batch_size: Positive int.
        order: None (`0..n-1`), or an int32 vector of the `n` positions
            in the order to serve them.

    Returns:
        A `tf.data.Dataset` of batches with the structure of `tensors`.

    Example:

    ```python
    x = tf.random.normal((1000, 28, 28, 1))
    y = tf.zeros((1000,), "int32")
    batches = keras_distill.pipelines.batched((x, y), 64)  # 16 batches
    ```
    """
    n = int(tf.nest.flatten(tensors)[0].shape[0])
    order = tf.range(n) if order is None else order
    whole, rest = divmod(n, batch_size)
    blocks = tf.reshape(order[: whole * batch_size], [whole, batch_size])
    data = tf.data.Dataset.from_tensor_slices(
        tf.nest.map_structure(lambda t: tf.gather(t, blocks), tensors)
    )
    if rest:
        last = order[whole * batch_size :]
        data = data.concatenate(
            tf.data.Dataset.from_tensors(
                tf.nest.map_structure(lambda t: tf.gather(t, last), tensors)
            )
        )
    return data


def shuffled_positions(n, batch_size, seed):
    """Batches of the positions `0..n-1`, in a new seeded order each pass.

    The order depends on `n` and `seed` alone (see `seeded_passes`), so
    two pipelines built with the same seed (`pipeline`, and
    `keras_distill.teachers.TeacherCache.dataset`) serve the same
    examples in the same batches.

    Args:
        n: The number of examples.
        batch_size: Positive int; the last batch may be smaller.
        seed: The shuffle seed.

    Returns:
        A `tf.data.Dataset` of int32 vectors, with a known cardinality.
    """

    def one_pass(key):
        order = tf.random.experimental.stateless_shuffle(tf.range(n), key)
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

    steps = -(-n // batch_size)
    return seeded_passes(seed, one_pass).apply(
        tf.data.experimental.assert_cardinality(steps)
    )


def batch_keys(seed):
    """Endless stateless seeds, one per batch, new ones at every pass.

    Zipped with a dataset of batches, they key each batch's random draws
    (`tf.random.stateless_*`) by `seed`, the pass and the batch's index
    alone: not by TensorFlow's global seed, as `Dataset.random` would.

    Args:
        seed: An int.

    Returns:
        An endless `tf.data.Dataset` of int64 tensors of shape `(2,)`.
    """
    return seeded_passes(
        seed,
        lambda key: tf.data.Dataset.range(2**62).map(
            lambda i: tf.random.experimental.stateless_fold_in(key, i)
        ),
    )


def seeded_passes(seed, one_pass):
    """A dataset that calls `one_pass(key)` afresh at every pass over it.

    The keys come from a generator seeded with `seed` alone: unlike a
    seeded `Dataset.shuffle` or `Dataset.random`, whose streams mix in
    TensorFlow's global seed, the result does not depend on whether (or
    to what) `keras.utils.set_random_seed` was called first. One key is
    drawn per pass, so a pass cut short does not move the next one's.
    Built inside a `keras_distill.callbacks.ResumableData` block, the
    keys follow the epoch of `fit`, so a resumed `fit` reads epoch k's
    order.

    Args:
        seed: An int.
        one_pass: A function of a stateless seed (an int64 tensor of shape
            `(2,)`) that returns a `tf.data.Dataset`.

    Returns:
        A `tf.data.Dataset` with the elements of `one_pass(key)`, with a
        new key at each pass.
    """
    with tf.init_scope():
        generator = tf.random.Generator.from_seed(seed)
    for recorder in getattr(_recorders, "active", ()):
        recorder.append((generator, seed))
    return tf.data.Dataset.range(1).flat_map(
        lambda _: one_pass(generator.make_seeds(1)[:, 0])
    )


def shift_augment(dataset, pixels=2, seed=0):
    """Random translations of up to `pixels` pixels, per example.

    Each image is shifted by a whole number of pixels in each direction,
    drawn uniformly from `[-pixels, pixels]`, with zeros filling the edge.
    Applied in the input pipeline, so a distiller's teacher and student see
    the same shifted batch. The shifts are deterministic for a seed (a
    stateless draw keyed by a seeded generator, whatever TensorFlow's
    global seed) and differ from epoch to epoch.

    Args:
        dataset: A `tf.data.Dataset` of `(images, labels)` batches, images
            shaped `(batch, height, width, channels)`.
        pixels: The largest shift, a non-negative int.
        seed: The augmentation seed.

    Returns:
        The augmented dataset (the input itself when its examples are not
        images).
    """
    spec = dataset.element_spec[0]
    if len(spec.shape) != 4 or not pixels:
        return dataset
    keys = batch_keys(seed)

    def shift(batch, key):
        images, labels = batch
        offsets = tf.random.stateless_uniform(
            (tf.shape(images)[0], 2),
            seed=key,
            minval=0,
            maxval=2 * pixels + 1,
            dtype=tf.int32,
        )
        return shift_images(images, offsets, pixels), labels

    out = tf.data.Dataset.zip((dataset, keys)).map(
        shift, num_parallel_calls=tf.data.AUTOTUNE
    )
    steps = int(dataset.cardinality())
    if steps >= 0:  # the zip with endless keys hides it
        out = out.apply(tf.data.experimental.assert_cardinality(steps))
    return out.prefetch(tf.data.AUTOTUNE)
