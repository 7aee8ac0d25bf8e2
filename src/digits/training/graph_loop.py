"""The "graph" training loop: Keras's own training step, fed from one in-memory tensor instead of tf.data.

`fit()` feeds its compiled steps through a tf.data pipeline: it copies the float32 images into the pipeline,
shuffles and gathers batches on background threads, and when it returns it shuts that pipeline down. For the
speedrun's one short epoch these are a large share of the run: on a busy 2-core AMD EPYC, 0.3–2.4 s before the
first step and, in 3 of 11 runs, 1.5–7.4 s after the last one with no CPU in use (the pipeline winding down).
Here the uint8 images are shuffled once per epoch by NumPy (seeded by the recipe) into one tensor, and each graph
call slices its batches from it and scales them to [0, 1] in the graph, exactly as `to_model_input` does. The step
itself is `model.train_step`, so the loss, metrics, optimizer and schedule are the compiled model's; callbacks are
called as `fit()` calls them (once per graph call and per epoch), so the run folder is the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf


def pixels_to_model_input(pixels: tf.Tensor) -> tf.Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 28, 28, 1) in [0, 1], the same values as `digits.data.mnist.to_model_input`."""
    return (tf.cast(pixels, tf.float32) / 255.0)[..., tf.newaxis]


def build_training_state(model: keras.Model, pixels: np.ndarray, labels: np.ndarray) -> None:
    """Create the optimizer's, loss's and metrics' variables before tracing, on one image, so the loop is traced once.

    A tf.function that creates variables while it is traced is traced a second time (about 0.5 s of CPU here).
    """
    model.optimizer.build(model.trainable_variables)
    images = pixels_to_model_input(tf.constant(pixels[:1]))
    predicted = model(images, training=False)
    model.compute_loss(images, labels[:1], predicted, training=False)
    model.compute_metrics(images, labels[:1], predicted, sample_weight=None)
    model.reset_metrics()


def make_steps_function(model: keras.Model, batch_size: int):
    """A compiled function that trains `model` on batches `first` to `last` (exclusive) of the given tensors."""

    # No autograph: the loop is written as tf.while_loop, and Keras's step must not be rewritten by autograph.
    @tf.function(autograph=False, jit_compile=False)
    def train_steps(pixels, labels, first, last):
        def step(index):
            batch = slice(index * batch_size, (index + 1) * batch_size)  # the last batch may be partial
            model.train_step((pixels_to_model_input(pixels[batch]), labels[batch]))
            return (index + 1,)

        tf.while_loop(lambda index: index < last, step, (first,))

    return train_steps


def fit_in_graph(model: keras.Model, pixels: np.ndarray, labels: np.ndarray, *, batch_size: int, epochs: int,
                 seed: int, validation: tuple[np.ndarray, np.ndarray] | None, validation_batch_size: int,
                 callbacks: Sequence[keras.callbacks.Callback], verbose: int) -> None:
    """Train the compiled `model` as `model.fit` would, on uint8 `pixels` (N, 28, 28) and one-hot `labels` (N, 10).

    Each epoch runs in graph calls of `model.steps_per_execution` steps; `validation` (model input and one-hot
    labels) is scored after every epoch by `model.evaluate`, `validation_batch_size` images at a time. Shuffling
    follows `seed`: the same seed, the same order.
    """
    steps = -(-len(pixels) // batch_size)
    steps_per_call = min(model.steps_per_execution, steps)
    callback_list = keras.callbacks.CallbackList(list(callbacks), add_history=True, add_progbar=verbose != 0,
                                                 verbose=verbose, epochs=epochs, steps=steps, model=model)
    shuffler = np.random.default_rng(seed)
    one_hot = tf.constant(labels)
    build_training_state(model, pixels, labels)
    train_steps = make_steps_function(model, batch_size)
    model.stop_training = False
    callback_list.on_train_begin()
    epoch_logs: dict = {}
    for epoch in range(epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        order = shuffler.permutation(len(pixels))
        # A uint8 copy of the shuffled images: a quarter of the float32 input's size.
        shuffled_pixels, shuffled_labels = tf.constant(pixels[order]), tf.gather(one_hot, order)
        for first in range(0, steps, steps_per_call):
            last = min(first + steps_per_call, steps)
            callback_list.on_train_batch_begin(first)
            train_steps(shuffled_pixels, shuffled_labels, tf.constant(first), tf.constant(last))
            callback_list.on_train_batch_end(last - 1, model.get_metrics_result())
        epoch_logs = dict(model.get_metrics_result())
        if validation is not None:
            scores = model.evaluate(*validation, batch_size=validation_batch_size, verbose=0, return_dict=True)
            epoch_logs.update({f"val_{name}": value for name, value in scores.items()})
        callback_list.on_epoch_end(epoch, epoch_logs)
        if model.stop_training:
            break
    if isinstance(model.optimizer, keras.optimizers.Optimizer):
        model.optimizer.finalize_variable_values(model.trainable_weights)  # swaps in averaged weights (use_ema)
    callback_list.on_train_end(logs=epoch_logs)
