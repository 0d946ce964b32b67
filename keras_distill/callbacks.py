"""Schedules for a `Distiller`'s temperature and loss weights, and data
pipelines that resume at the right epoch.

The temperature, `alpha` and the loss weights are variables of the
`keras_distill.Distiller`, read by the compiled training step when it
runs; these callbacks assign them at the start of each epoch, so the
schedule takes effect without recompiling (XLA included).
`ResumableData` keys the seeded pipelines of `keras_distill.pipelines` by
the epoch, so that a `fit` resumed by `keras.callbacks.BackupAndRestore`
reads the batches an uninterrupted run would have read.
"""

import math

import keras

from keras_distill._validation import check_int
from keras_distill.pipelines import record_passes
from keras_distill.pipelines import stop_recording

FORMS = ("constant", "linear", "cosine", "warmup")


def schedule(form, start=None, end=None, epochs=None):
    """A named schedule as a function of the epoch index (from 0).

    Forms:

    - `"constant"`: `end` every epoch (or `start` if `end` is not given);
    - `"linear"`: from `start` at epoch 0 to `end` at epoch `epochs - 1`,
      then `end`;
    - `"cosine"`: the same ends, along a half cosine;
    - `"warmup"`: `end · min((epoch + 1) / epochs, 1)`, the linear warm-up
      of mdistiller (epochs counted from 1).

    Args:
        form: One of `"constant"`, `"linear"`, `"cosine"`, `"warmup"`.
        start: The value at epoch 0 (linear, cosine, constant).
        end: The final value.
        epochs: The number of epochs the ramp lasts (not for constant).

    Returns:
        A function `epoch -> float`.

    Raises:
        ValueError: If `form` is unknown or a value it needs is missing.

    Example:

    >>> f = keras_distill.callbacks.schedule("linear", 8.0, 2.0, epochs=4)
    >>> [f(e) for e in range(5)]
    [8.0, 6.0, 4.0, 2.0, 2.0]
    """
    if form not in FORMS:
        raise ValueError(
            f"Invalid value for argument `schedule`. Expected a function of "
            f"the epoch or one of {list(FORMS)}. Received: schedule={form!r}"
        )

    def number(arg, value):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise ValueError(
                f"Invalid value for argument `{arg}` of the {form!r} "
                f"schedule. Expected a finite float. Received: {arg}={value!r}"
            )
        return float(value)

    if form == "constant":
        constant = number("end", end if end is not None else start)
        return lambda epoch: constant
    check_int("epochs", epochs, low=1)
    end = number("end", end)
    if form == "warmup":
        return lambda epoch: end * min((epoch + 1) / epochs, 1.0)
    start = number("start", start)

    def progress(epoch):
        return min(epoch / max(epochs - 1, 1), 1.0)

    if form == "linear":
        return lambda epoch: start + (end - start) * progress(epoch)
    return lambda epoch: (
        start
        + (end - start) * (1.0 - math.cos(math.pi * progress(epoch))) / 2.0
    )


class _Schedule(keras.callbacks.Callback):
    """Shared logic: resolve the schedule, assign at each epoch, log."""

    log_name = None

    def __init__(self, schedule_fn, start=None, end=None, epochs=None):
        super().__init__()
        if callable(schedule_fn):
            self._fn = schedule_fn
        else:
            self._fn = schedule(schedule_fn, start, end, epochs)
        self.schedule = schedule_fn
        self.start = start
        self.end = end
        self.epochs = epochs
        self.history = []

    def _distiller(self):
        from keras_distill.distiller import Distiller

        if not isinstance(self.model, Distiller):
            raise ValueError(
                f"`{type(self).__name__}` acts on a keras_distill.Distiller. "
                f"Received: a model of type {type(self.model).__name__}"
            )
        return self.model

    def _assign(self, distiller, value):
        raise NotImplementedError

    def on_epoch_begin(self, epoch, logs=None):
        value = float(self._fn(epoch))
        self._assign(self._distiller(), value)
        self.history.append((epoch, value))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.history:
            logs[self.log_name] = self.history[-1][1]

    def get_config(self):
        """The schedule's arguments (a named form, or the function)."""
        return {
            "schedule_fn": self.schedule,
            "start": self.start,
            "end": self.end,
            "epochs": self.epochs,
        }

    @classmethod
    def from_config(cls, config):
        """Builds the callback from the dict `get_config` returned."""
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_distill")
class TemperatureSchedule(_Schedule):
    """Sets the distillation temperature at the start of every epoch.

    Every loss of the distiller that has a temperature gets the value, as
    `distiller.temperature = value` does. The value is logged as
    `temperature` in the epoch's logs.

    Args:
        schedule_fn: A function `epoch -> temperature` (epochs from 0), or
            a named form: `"constant"`, `"linear"`, `"cosine"`, `"warmup"`
            (see `keras_distill.callbacks.schedule`).
        start: The named form's first value.
        end: The named form's last value.
        epochs: The named form's length in epochs.

    Raises:
        ValueError: If the schedule is invalid, or (at the first epoch) the
            model is not a `Distiller` with a temperature, or a value is not
            positive.

    Example:

    ```python
    anneal = keras_distill.callbacks.TemperatureSchedule(
        "linear", start=8.0, end=2.0, epochs=20
    )
    distiller.fit(train_ds, epochs=20, callbacks=[anneal])
    ```
    """

    log_name = "temperature"

    def _assign(self, distiller, value):
        distiller.temperature = value


@keras.saving.register_keras_serializable(package="keras_distill")
class LossWeightSchedule(_Schedule):
    """Sets a loss weight of a `Distiller` at the start of every epoch.

    Args:
        schedule_fn: A function `epoch -> weight` (epochs from 0), or a
            named form: `"constant"`, `"linear"`, `"cosine"`, `"warmup"`
            (see `keras_distill.callbacks.schedule`).
        start: The named form's first value.
        end: The named form's last value.
        epochs: The named form's length in epochs.
        target: Which weight: `"student"` for `alpha`, the supervised
            loss' weight (values in [0, 1]); a distillation loss' name or
            index; or `None` (the default) for every distillation loss'
            weight.

    Raises:
        ValueError: If the schedule is invalid, or (at the first epoch) the
            target does not exist or a value is out of range.

    Example:

    ```python
    warmup = keras_distill.callbacks.LossWeightSchedule(
        "warmup", end=1.0, epochs=5, target="feature_distillation"
    )
    distiller.fit(train_ds, epochs=20, callbacks=[warmup])
    ```
    """

    def __init__(
        self, schedule_fn, start=None, end=None, epochs=None, target=None
    ):
        super().__init__(schedule_fn, start, end, epochs)
        if not (
            target is None
            or isinstance(target, str)
            or (isinstance(target, int) and not isinstance(target, bool))
        ):
            raise ValueError(
                "Invalid value for argument `target`. Expected None, "
                "'student', a loss name or a loss index. Received: "
                f"target={target!r}"
            )
        self.target = target
        self.log_name = (
            "student_loss_weight"
            if target == "student"
            else f"{target if target is not None else 'distillation'}_weight"
        )

    def _assign(self, distiller, value):
        if self.target == "student":
            distiller.student_loss_weight = value
            return
        weights = distiller.distillation_loss_weights
        names = [loss.name for loss in distiller.distillation_losses]
        if self.target is None:
            indices = range(len(weights))
        elif isinstance(self.target, int):
            if not -len(weights) <= self.target < len(weights):
                raise ValueError(
                    "Invalid value for argument `target`. Expected an index "
                    f"below {len(weights)}. Received: target={self.target}"
                )
            indices = [self.target % len(weights)]
        elif self.target in names:
            indices = [names.index(self.target)]
        else:
            raise ValueError(
                "Invalid value for argument `target`. Expected 'student' or "
                f"one of the distiller's loss names {names}. Received: "
                f"target={self.target!r}"
            )
        for i in indices:
            weights[i] = value
        distiller.distillation_loss_weights = weights

    def get_config(self):
        config = super().get_config()
        config["target"] = self.target
        return config


class ResumableData(keras.callbacks.Callback):
    """Keys the seeded pipelines built in its `with` block by the epoch.

    The shuffled pipelines of `keras_distill.pipelines` (`pipeline`,
    `shift_augment`; the application's `load` builds on them) and
    `keras_distill.teachers.TeacherCache.dataset`
    draw a new random key at each pass over them, from their seed alone.
    A `fit` that `keras.callbacks.BackupAndRestore` resumes at epoch k
    runs in a fresh process whose pipelines are at their first pass, so
    it would read epoch 0's order and shifts again. Build the training
    pipeline inside a `with` block of this callback and give the callback
    to `fit`: at the start of every epoch it sets each pipeline to that
    epoch's pass, so epoch k reads what an uninterrupted run reads (and a
    `fit` under a `tf.distribute` strategy, which peeks at a first batch
    before training, starts at pass 0 too).

    Example:

    >>> resumable = keras_distill.callbacks.ResumableData()
    >>> with resumable:
    ...     train = keras_distill.pipelines.pipeline(
    ...         x, y, batch_size=64, shuffle=True, seed=0)
    >>> resumable.pipelines  # the shuffle of `train`
    1
    >>> # model.fit(train, epochs=10, callbacks=[
    >>> #     keras.callbacks.BackupAndRestore("backup"), resumable])
    """

    def __init__(self):
        super().__init__()
        self._generators = []

    @property
    def pipelines(self):
        """How many seeded pass generators were recorded."""
        return len(self._generators)

    def __enter__(self):
        record_passes(self._generators)
        return self

    def __exit__(self, *exc_info):
        stop_recording(self._generators)
        return False

    def set_epoch(self, epoch):
        """Makes every recorded pipeline's next pass the one of `epoch`.

        Args:
            epoch: The epoch index, from 0.

        Raises:
            ValueError: If `epoch` is not a non-negative int.
        """
        check_int("epoch", epoch)
        for generator, seed in self._generators:
            generator.reset_from_seed(seed)
            for _ in range(epoch):
                generator.make_seeds(1)

    def on_train_begin(self, logs=None):
        if not self._generators:
            raise ValueError(
                "`ResumableData` recorded no seeded pipeline. Expected the "
                "training dataset to be built inside its `with` block "
                "(keras_distill.pipelines.pipeline(shuffle=True), "
                "shift_augment or TeacherCache.dataset). Received: none."
            )

    def on_epoch_begin(self, epoch, logs=None):
        self.set_epoch(epoch)
