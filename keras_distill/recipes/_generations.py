"""One recipe step (`generation`), reverse KD and born-again networks."""

import dataclasses

import keras

from keras_distill import _defaults as defaults
from keras_distill._validation import check_int


def _sparse_ce():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _evaluate(model, data):
    """`model.evaluate(data)` as a dict, or None without data."""
    if data is None:
        return None
    return model.evaluate(data, verbose=0, return_dict=True)


@dataclasses.dataclass
class Trained:
    """One model a recipe trained.

    Attributes:
        name: What the recipe calls it (`"generation_1"`, ...).
        model: The trained `keras.Model`.
        history: The `History.history` dict of its training.
        metrics: `evaluate()` on the recipe's `test_data`, or None.
    """

    name: str
    model: object
    history: dict
    metrics: object = None


def _options(
    epochs,
    temperature,
    alpha,
    optimizer,
    loss,
    metrics,
    validation_data,
    test_data,
    verbose,
):
    """The training options every distillation of a recipe shares."""
    return dict(
        epochs=epochs,
        temperature=temperature,
        alpha=alpha,
        optimizer=optimizer,
        loss=loss,
        metrics=metrics,
        validation_data=validation_data,
        test_data=test_data,
        verbose=verbose,
    )


def generation(
    teacher,
    student,
    temperature=defaults.BORN_AGAIN["temperature"],
    alpha=defaults.BORN_AGAIN["alpha"],
    optimizer="adam",
    loss=None,
    metrics=(),
):
    """The compiled `Distiller` of one step of a recipe.

    `born_again` and `reverse_distill` train each of their models with
    one; call it to run a step with a training loop of your own (your
    callbacks, your data pipeline). The defaults are a born-again
    generation's.

    Args:
        teacher: The trained teacher `keras.Model` (logits).
        student: The `keras.Model` to train.
        temperature: The softmax temperature. Defaults to 1.0.
        alpha: The weight of the supervised loss. Defaults to 0.5.
        optimizer: An optimizer or its name (a new one per call).
        loss: The supervised loss. Defaults to sparse categorical
            cross-entropy on logits.
        metrics: The student's metrics.

    Returns:
        A compiled `keras_distill.Distiller` (plain KD, `LogitsDistillation`
        at `temperature`).

    Example:

    ```python
    distiller = keras_distill.recipes.generation(previous, make_student())
    distiller.fit(train_ds, epochs=20, callbacks=[my_checkpoint])
    ```
    """
    from keras_distill.distiller import Distiller
    from keras_distill.losses.logits import LogitsDistillation

    distiller = Distiller(
        teacher,
        student,
        LogitsDistillation(temperature),
        student_loss_weight=alpha,
    )
    distiller.compile(
        optimizer=keras.optimizers.get(optimizer)
        if isinstance(optimizer, str)
        else optimizer,
        loss=loss or _sparse_ce(),
        metrics=list(metrics or []),
    )
    return distiller


def _fit(trainer, student, index, train_data, options):
    """One fit of a recipe: its `fit_fn` when given, else `trainer.fit`."""
    if options.get("fit_fn") is not None:
        return options["fit_fn"](trainer, student, index)
    return trainer.fit(
        train_data,
        validation_data=options["validation_data"],
        epochs=options["epochs"],
        verbose=options["verbose"],
        shuffle=False,  # datasets shuffle themselves
    )


def _distill(teacher, student, train_data, name, options, index=None):
    """Distils `student` from `teacher` with the recipe's `options`."""
    loss = options["loss"] or _sparse_ce()
    metrics = list(options["metrics"] or [])
    if options.get("distiller_fn") is None:
        distiller = generation(
            teacher,
            student,
            options["temperature"],
            options["alpha"],
            options["optimizer"],
            loss,
            metrics,
        )
    else:
        distiller = options["distiller_fn"](teacher, student)
    history = _fit(distiller, student, index, train_data, options)
    student.compile(loss=loss, metrics=metrics)
    return Trained(
        name, student, history.history, _evaluate(student, options["test_data"])
    )


def reverse_distill(
    small_teacher,
    large_model,
    train_data,
    epochs=20,
    temperature=defaults.REVERSE["temperature"],
    alpha=defaults.REVERSE["alpha"],
    optimizer="adam",
    loss=None,
    metrics=("accuracy",),
    validation_data=None,
    test_data=None,
    verbose=0,
):
    """Reverse KD: a trained small model teaches a large one.

    Yuan et al. (CVPR 2020) showed that a weaker model still improves a
    stronger one through distillation, as a learned label smoothing. The
    default `alpha=0.5` keeps the labels as strong as the teacher, since
    the teacher is the weaker model.

    Args:
        small_teacher: The trained small `keras.Model` (logits).
        large_model: The large `keras.Model` to train (fresh weights).
        train_data: Training data for `fit` (a `tf.data.Dataset` of
            `(x, y)` batches, or arrays in a tuple `(x, y)`).
        epochs: Training epochs. Defaults to 20.
        temperature: The softmax temperature. Defaults to 4.0.
        alpha: The weight of the supervised loss. Defaults to 0.5.
        optimizer: Optimizer name or instance. Defaults to `"adam"`.
        loss: The supervised loss. Defaults to sparse categorical
            cross-entropy on logits.
        metrics: Metrics of the large model. Defaults to accuracy.
        validation_data: Optional validation data for `fit`.
        test_data: Optional data the trained model is evaluated on.
        verbose: Keras' verbosity. Defaults to 0.

    Returns:
        A `Trained` holding the large model, its history and its test
        metrics.

    Example:

    ```python
    result = keras_distill.recipes.reverse_distill(
        small, large, train_ds, epochs=20, test_data=test_ds
    )
    result.metrics["accuracy"]
    ```
    """
    options = _options(
        epochs,
        temperature,
        alpha,
        optimizer,
        loss,
        metrics,
        validation_data,
        test_data,
        verbose,
    )
    return _distill(
        small_teacher,
        large_model,
        _as_dataset(train_data),
        "reverse",
        options,
    )


@dataclasses.dataclass
class BornAgain:
    """What `born_again` returns.

    Attributes:
        generations: A list of `Trained`: `generations[0]` is trained from
            the labels alone, `generations[k]` is distilled from
            `generations[k - 1]`.
        ensemble: A `keras_distill.teachers.Ensemble` of the born-again
            generations (1 and later), averaging their probabilities.
        ensemble_metrics: `evaluate()` of the ensemble on `test_data`, or
            None.
    """

    generations: list
    ensemble: object
    ensemble_metrics: object = None


def born_again(
    build_fn,
    train_data,
    generations=3,
    epochs=20,
    temperature=defaults.BORN_AGAIN["temperature"],
    alpha=defaults.BORN_AGAIN["alpha"],
    optimizer="adam",
    loss=None,
    metrics=("accuracy",),
    validation_data=None,
    test_data=None,
    teacher=None,
    verbose=0,
    distiller_fn=None,
    fit_fn=None,
    on_generation=None,
):
    """Born-again networks: distil a model into its own architecture.

    Generation 0 is trained from the labels (or is `teacher`, when given);
    each next generation is a fresh `build_fn()` distilled from the one
    before (Furlanello et al., ICML 2018). The generations 1 and later are
    also returned as an ensemble (the paper's BANE).

    Each generation learns its teacher's outputs at `temperature=1`, as in
    the paper, and the labels at half weight (`alpha=0.5`): with no
    labels (the paper's `alpha=0`) the errors grew from one generation of
    `keras-distill`'s CNN to the next, and KD's `alpha=0.1`,
    `temperature=4` did worse on both the CNN and the 800-800 MLP of the
    recipes benchmark (`docs/benchmarks.md`).

    Three optional hooks fit the recipe into a training loop of your own
    (the `keras-distill` command uses them): `distiller_fn` makes each
    generation's distiller (your losses, your optimizer), `fit_fn` runs
    each fit (your data pipeline, callbacks and checkpoints), and
    `on_generation` sees each generation once it is trained. Without
    them, each generation is `keras_distill.recipes.generation` fitted on
    `train_data`.

    Args:
        build_fn: A function with no argument that returns a new, built,
            uncompiled `keras.Model` (logits), fresh weights each call.
        train_data: Training data (a `tf.data.Dataset` of `(x, y)` batches,
            or a tuple `(x, y)` of arrays). May be None when `fit_fn` is
            given (it feeds every fit).
        generations: Born-again generations after generation 0, a
            positive integer. Defaults to 3.
        epochs: Training epochs of each generation. Defaults to 20.
        temperature: The softmax temperature. Defaults to 1.0.
        alpha: The weight of the supervised loss. Defaults to 0.5.
        optimizer: Optimizer name (a new optimizer per generation).
            Defaults to `"adam"`.
        loss: The supervised loss. Defaults to sparse categorical
            cross-entropy on logits.
        metrics: Metrics of every generation. Defaults to accuracy.
        validation_data: Optional validation data for `fit`.
        test_data: Optional data every generation is evaluated on.
        teacher: Optional trained generation 0 (then it is not retrained).
        verbose: Keras' verbosity. Defaults to 0.
        distiller_fn: Optional function `(teacher, student)` that returns
            the compiled model whose `fit` trains generation k's `student`
            from generation k - 1 (`teacher`), e.g. a
            `keras_distill.Distiller` with losses of your own. Then
            `temperature`, `alpha` and `optimizer` are not used. Defaults
            to `keras_distill.recipes.generation` with `temperature`,
            `alpha`, `optimizer`, `loss` and `metrics`.
        fit_fn: Optional function `(trainer, model, k)` that trains
            generation k and returns the `keras.callbacks.History` of its
            fit. `trainer` is what to fit: generation k's distiller, or,
            for a generation 0 trained here, `model` itself, compiled on
            the labels. `model` is generation k's model (save it there to
            checkpoint it before the next generation starts). Then
            `train_data`, `validation_data`, `epochs` and `verbose` are
            not used. Defaults to `trainer.fit(train_data,
            validation_data=validation_data, epochs=epochs,
            verbose=verbose)`.
        on_generation: Optional function `(k, trained)` called with each
            generation's `Trained` once it is trained, compiled with `loss`
            and `metrics` and evaluated on `test_data`: generation 0 (the
            given `teacher`, or the one trained here), then 1 to
            `generations`, in order.

    Returns:
        A `BornAgain`.

    Raises:
        ValueError: If `generations` is not a positive integer, `build_fn`
            or a given hook is not callable, or `train_data` is None
            without a `fit_fn`.

    Example:

    ```python
    result = keras_distill.recipes.born_again(
        make_student,
        train_ds,
        generations=2,
        test_data=test_ds,
    )
    [g.metrics["accuracy"] for g in result.generations]

    # Each generation saved as soon as it is trained.
    keras_distill.recipes.born_again(
        make_student,
        train_ds,
        on_generation=lambda k, g: g.model.save(f"generation_{k}.keras"),
    )
    ```
    """
    from keras_distill.teachers import Ensemble

    check_int("generations", generations, low=1)
    if not callable(build_fn):
        raise ValueError(
            "Invalid value for argument `build_fn`. Expected a function "
            f"that returns a new model. Received: build_fn={build_fn!r}"
        )
    hooks = dict(
        distiller_fn=distiller_fn, fit_fn=fit_fn, on_generation=on_generation
    )
    for name, hook in hooks.items():
        if hook is not None and not callable(hook):
            raise ValueError(
                f"Invalid value for argument `{name}`. Expected a function "
                f"or None. Received: {name}={hook!r}"
            )
    if train_data is None and fit_fn is None:
        raise ValueError(
            "Invalid value for argument `train_data`. Expected training "
            "data (or a `fit_fn` that feeds every fit). Received: "
            "train_data=None"
        )
    if not isinstance(optimizer, str):
        raise ValueError(
            "Invalid value for argument `optimizer`. Expected an optimizer "
            "name (each generation gets a new optimizer). Received: "
            f"optimizer={optimizer!r}"
        )
    options = _options(
        epochs,
        temperature,
        alpha,
        optimizer,
        loss,
        metrics,
        validation_data,
        test_data,
        verbose,
    )
    options.update(distiller_fn=distiller_fn, fit_fn=fit_fn)
    train_data = _as_dataset(train_data)
    if teacher is None:
        first = build_fn()
        first.compile(
            optimizer=optimizer,
            loss=loss or _sparse_ce(),
            metrics=list(metrics or []),
        )
        history = _fit(first, first, 0, train_data, options)
        trained = [
            Trained(
                "generation_0",
                first,
                history.history,
                _evaluate(first, test_data),
            )
        ]
    else:
        teacher.compile(loss=loss or _sparse_ce(), metrics=list(metrics or []))
        trained = [
            Trained("generation_0", teacher, {}, _evaluate(teacher, test_data))
        ]
    if on_generation is not None:
        on_generation(0, trained[0])
    for k in range(1, generations + 1):
        trained.append(
            _distill(
                trained[-1].model,
                build_fn(),
                train_data,
                f"generation_{k}",
                options,
                index=k,
            )
        )
        if on_generation is not None:
            on_generation(k, trained[-1])
    ensemble = Ensemble([t.model for t in trained[1:]], temperature=1.0)
    ensemble_metrics = None
    if test_data is not None:
        ensemble.compile(loss=loss or _sparse_ce(), metrics=list(metrics))
        ensemble_metrics = _evaluate(ensemble, test_data)
    return BornAgain(trained, ensemble, ensemble_metrics)


def _as_dataset(data):
    """A `(x, y)` tuple of arrays becomes a shuffled, batched dataset."""
    if isinstance(data, tuple) and len(data) == 2:
        import tensorflow as tf

        x, y = data
        return (
            tf.data.Dataset.from_tensor_slices((x, y))
            .shuffle(len(x), seed=0)
            .batch(32)
        )
    return data
