"""A training loop for ``MultiWorkerMirroredStrategy``, where Keras 3 ``model.fit`` does not work on TF 2.21.

Why not ``fit``: before the first step ``fit`` calls ``_maybe_symbolic_build``, which reduces a
distributed batch with ``strategy.reduce("MEAN", ..., axis=None)``; under the collective strategy that
tries to convert the ``PerReplica`` value to a tensor and fails (keras-team/keras#20585,
tensorflow/tensorflow#72388). Building every variable before ``fit`` does not help: the reduce runs
regardless. Keras' own ``make_train_function`` fails next (it reduces scalar metric results with
``axis=0``). So this loop runs Keras' ``train_step``/``test_step`` under ``strategy.run`` itself and
reads the metric results in cross-replica context, which all-reduces them: every worker sees the same
numbers, takes the same early-stopping decision, and none waits forever in a collective.

It drives the very callbacks ``fit`` gets (through ``keras.callbacks.CallbackList``, with Keras' progress
bar), so history, checkpoints, early stopping and learning-rate schedules behave alike. Datasets are
batched with the global batch and repeat; each epoch runs ``steps_per_epoch`` steps and each validation
``validation_steps`` steps from the start of the validation data, so all workers run the same number of
collective steps (uneven ends would hang them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kit.train.metrics import scalar_logs

if TYPE_CHECKING:
    import keras
    import tensorflow as tf


def prepare(model: keras.Model, strategy: tf.distribute.Strategy, dataset: tf.data.Dataset) -> None:
    """Create every variable (metrics, loss trackers, optimizer slots) in cross-replica context.

    Inside ``strategy.run`` variables cannot be created; ``fit`` would build them symbolically first,
    here one local batch through the model, loss and metrics does it (results are then reset).
    """
    x, y = next(iter(dataset.take(1)))[:2]
    with strategy.scope():
        y_pred = model(x, training=False)
        model.compute_loss(x, y, y_pred)
        model.compute_metrics(x, y, y_pred, None)
        model.optimizer.build(model.trainable_variables)
    model.reset_metrics()


def _step_functions(model: keras.Model, strategy: tf.distribute.Strategy) -> tuple[Any, Any]:
    import tensorflow as tf

    @tf.function
    def train_step(iterator: Any) -> None:
        strategy.run(model.train_step, args=(next(iterator),))

    @tf.function
    def test_step(iterator: Any) -> None:
        strategy.run(model.test_step, args=(next(iterator),))

    return train_step, test_step


def _results(model: keras.Model) -> dict[str, float]:
    # Reading metric variables outside strategy.run all-reduces them across workers (collective call).
    return scalar_logs(model.get_metrics_result())


def evaluate(
    model: keras.Model, strategy: tf.distribute.Strategy, dataset: tf.data.Dataset, steps: int, test_step: Any = None
) -> dict[str, float]:
    """Metrics of ``model`` over ``steps`` batches of ``dataset`` (repeated so no worker runs out)."""
    if test_step is None:
        _, test_step = _step_functions(model, strategy)
    model.reset_metrics()
    iterator = iter(strategy.experimental_distribute_dataset(dataset.repeat()))
    for _ in range(steps):
        test_step(iterator)
    return _results(model)


def fit(
    model: keras.Model,
    strategy: tf.distribute.Strategy,
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset | None,
    *,
    epochs: int,
    initial_epoch: int,
    steps_per_epoch: int,
    validation_steps: int | None,
    callbacks: Sequence[keras.callbacks.Callback],
    verbose: int = 1,
) -> None:
    """``model.fit(train_ds, epochs, initial_epoch, steps_per_epoch, validation_data, callbacks)`` for
    multi-worker strategies. ``model`` must be compiled in ``strategy.scope()``."""
    import keras

    if val_ds is not None and not validation_steps:
        raise ValueError("multi-worker training needs validation_steps (every worker must run the same number of steps)")
    prepare(model, strategy, train_ds)
    train_step, test_step = _step_functions(model, strategy)
    callback_list = keras.callbacks.CallbackList(
        list(callbacks),
        add_history=True,
        add_progbar=verbose != 0,
        verbose=verbose,
        epochs=epochs,
        steps=steps_per_epoch,
        model=model,
    )
    iterator = iter(strategy.experimental_distribute_dataset(train_ds.repeat()))
    model.stop_training = False
    callback_list.on_train_begin()
    logs: dict[str, float] = {}
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        for step in range(steps_per_epoch):
            callback_list.on_train_batch_begin(step)
            train_step(iterator)
            callback_list.on_train_batch_end(step, None)
        logs = _results(model)
        if val_ds is not None:
            val = evaluate(model, strategy, val_ds, int(validation_steps or 0), test_step)
            logs.update({f"val_{name}": value for name, value in val.items()})
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callback_list.on_train_end(logs)
