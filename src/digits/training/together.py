"""Several small recipes trained together: one model of independent branches, one `fit()`, one compiled graph.

The study's three shallow networks each spend more time on what surrounds their arithmetic than on it: building
the training and validation graphs, slicing the same batches out of the same images, a return to Python at every
epoch's end. Trained together, each batch is sliced once and fed to every branch, and the graphs are built once.

Each branch is its recipe's own network, seeded with its recipe's seed as it would be alone, and trained by its
own loss, optimizer and learning-rate schedule: a branch's loss reaches only its own weights, so the branches never
touch each other. They share the data: the same batches, shuffled by the group's seed as a run alone shuffles them.
So each branch is the run its recipe makes alone, weight for weight and figure for figure (a test checks it); it
gets its own run folder, whose config.json names the runs it trained with and whose epoch seconds are the
shared epoch's. The branches are trained by a `train_step` of their own, written with TensorFlow's GradientTape
(Keras's way of customising fit() on that backend).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import keras
import tensorflow as tf
from keras import ops

from digits.data.mnist import Mnist
from digits.errors import DigitsError
from digits.training.callbacks import RunRecorder, epoch_progress
from digits.training.fit import (
    VALIDATION_BATCH_SIZE,
    FitOutcome,
    RunInterrupted,
    TrainedRun,
    TrainingData,
    describe_run,
    failed_writes_explained,
    make_loss,
    make_optimizer,
    prepare_data,
    save_and_describe,
    steps_per_epoch,
    until_interrupted,
)
from digits.training.models import build_model
from digits.training.precision import choose_precision
from digits.training.recipes import Recipe
from digits.training.runs import CONFIG_FILE, HISTORY_COLUMNS, HISTORY_FILE, check_writable, create_run_dir, write_json

# What the recipes of a group must share: everything that decides which batches are fed, and when.
SHARED_SETTINGS = ("batch_size", "epochs", "validation", "train_limit", "test_limit", "seed", "steps_per_execution",
                   "jit_compile")
# The models whose arithmetic is small beside what surrounds it; a CNN keeps both cores busy alone.
TOGETHER_MODELS = ("shallow",)


def can_train_together(recipes: Sequence[Recipe]) -> bool:
    """Whether `recipes` (two or more) can be trained as the branches of one model (see the module).

    Only float32 recipes trained by fit() that stop at no target and average no weights are grouped: each of those
    changes what a single run does in ways a branch cannot copy (a global dtype policy, the graph loop's own
    batches, stopping, swapping weights)."""
    return (len(recipes) > 1 and all(recipe.model in TOGETHER_MODELS for recipe in recipes)
            and all(recipe.precision == "float32" and recipe.training_loop == "fit"
                    and recipe.target_accuracy is None and not recipe.weight_averaging for recipe in recipes)
            and all(getattr(recipe, name) == getattr(recipes[0], name)
                    for recipe in recipes for name in SHARED_SETTINGS))


class Branches(keras.Model):
    """Independent models fed the same images, each trained by its own loss and optimizer.

    Its logs name each branch's figures `<number>_loss`, `<number>_accuracy` (and `val_...`), numbered from 0.
    """

    def __init__(self, branches: Sequence[keras.Model], losses: Sequence, optimizers: Sequence, **kwargs):
        super().__init__(**kwargs)
        self.branches = list(branches)
        self.branch_losses = [keras.losses.get(loss) for loss in losses]
        self.branch_optimizers = list(optimizers)
        for branch, optimizer in zip(self.branches, self.branch_optimizers, strict=True):
            optimizer.build(branch.trainable_variables)  # Its slots exist before the graph is traced.
        self.loss_means = [keras.metrics.Mean(name=f"{number}_loss") for number in range(len(self.branches))]
        self.accuracies = [keras.metrics.CategoricalAccuracy(name=f"{number}_accuracy")
                           for number in range(len(self.branches))]

    def call(self, images, training=False):
        return [branch(images, training=training) for branch in self.branches]

    @property
    def metrics(self):
        return [*self.loss_means, *self.accuracies]

    def _record(self, labels, outputs, losses) -> dict:
        for mean, accuracy, output, loss in zip(self.loss_means, self.accuracies, outputs, losses, strict=True):
            # Weighted by the batch's size, as fit()'s own loss figure is: a short last batch counts less.
            mean.update_state(loss, sample_weight=ops.shape(labels)[0])
            accuracy.update_state(labels, output)
        return {metric.name: metric.result() for metric in self.metrics}

    def train_step(self, data):
        images, labels = data
        # One tape over every branch; each branch's gradient is taken of its own loss only.
        with tf.GradientTape(persistent=True) as tape:
            outputs = self(images, training=True)
            losses = self.batch_losses(labels, outputs)
        for branch, loss, optimizer in zip(self.branches, losses, self.branch_optimizers, strict=True):
            optimizer.apply(tape.gradient(loss, branch.trainable_variables), branch.trainable_variables)
        del tape
        return self._record(labels, outputs, losses)

    def test_step(self, data):
        images, labels = data
        outputs = self(images, training=False)
        return self._record(labels, outputs, self.batch_losses(labels, outputs))

    def batch_losses(self, labels, outputs) -> list:
        # Each loss averaged over the batch, as compile()'s losses are.
        return [ops.mean(loss(labels, output)) for loss, output in zip(self.branch_losses, outputs, strict=True)]


def branch_logs(logs: dict | None, number: int) -> dict:
    """The group's logs as branch `number`'s own, under a single run's names: `1_loss` -> `loss`,
    `val_1_accuracy` -> `val_accuracy`."""
    prefix, own = f"{number}_", {}
    for name, value in (logs or {}).items():
        validation = name.startswith("val_")
        rest = name.removeprefix("val_")
        if rest.startswith(prefix):
            own[("val_" if validation else "") + rest.removeprefix(prefix)] = value
    return own


class BranchLogs(keras.callbacks.Callback):
    """Shows `callback` (a RunRecorder, a progress line) one branch's model and figures, under a single run's
    names."""

    def __init__(self, number: int, branch: keras.Model, callback: keras.callbacks.Callback):
        super().__init__()
        self.number, self.branch, self.callback = number, branch, callback

    def set_model(self, model):
        super().set_model(model)
        self.callback.set_model(self.branch)

    def on_train_begin(self, logs=None):
        self.callback.on_train_begin(branch_logs(logs, self.number))

    def on_epoch_begin(self, epoch, logs=None):
        self.callback.on_epoch_begin(epoch, branch_logs(logs, self.number))

    def on_epoch_end(self, epoch, logs=None):
        self.callback.on_epoch_end(epoch, branch_logs(logs, self.number))

    def on_train_end(self, logs=None):
        self.callback.on_train_end(branch_logs(logs, self.number))


def train_together(recipes: Sequence[Recipe], data: Mnist, runs_dir: str | Path, *,
                   verbose: int | str = "epochs",
                   callbacks: Sequence[keras.callbacks.Callback] = ()) -> list[TrainedRun]:
    """Train `recipes` as the branches of one model (they must pass `can_train_together`); one run folder each.

    verbose as `digits.training.fit.train`'s ("epochs" shows one progress line or bar for the group, with the
    first branch's figures); `callbacks` run after those that record each epoch and see the group's model.
    Raises RunInterrupted for the first run after closing every folder consistently if the user presses Ctrl-C.
    """
    if not can_train_together(recipes):
        raise DigitsError("These recipes cannot be trained together: they must all be shallow, float32 recipes "
                          f"that agree on {', '.join(SHARED_SETTINGS)}; train them one by one.")
    if verbose not in ("epochs", 0, 1, 2):
        raise DigitsError(f'`verbose` is 0, 1, 2 or "epochs", not {verbose!r}.')
    check_writable(runs_dir)
    first = recipes[0]
    split = prepare_data(first, data)  # The same images and labels for every branch.
    total_steps = steps_per_epoch(first, len(split.train_images)) * first.epochs
    branches = []
    for recipe in recipes:
        keras.utils.set_random_seed(recipe.seed)  # Each branch starts from the weights it would have alone.
        branches.append(build_model(recipe.model))
    model = Branches(branches, [make_loss(recipe) for recipe in recipes],
                     [make_optimizer(recipe, total_steps) for recipe in recipes], name="branches")
    steps = steps_per_epoch(first, len(split.train_images))
    model.compile(steps_per_execution=min(first.steps_per_execution or steps, steps), jit_compile=first.jit_compile)
    keras.utils.set_random_seed(first.seed)  # The shared shuffling follows the group's seed.

    names = [recipe.preset for recipe in recipes]
    run_dirs, configs, recorders = [], [], []
    for recipe in recipes:
        run_dir = create_run_dir(runs_dir, recipe.preset)
        config = describe_run(recipe, data, split, model, choose_precision(recipe.precision, recipe.model))
        config["trained_together_with"] = [name for name in names if name != recipe.preset]
        config["together"] = ("Trained in one fit() with the other runs named in trained_together_with, as "
                              "independent branches of one model fed the same batches; its epoch seconds are the "
                              "shared epoch's.")
        with failed_writes_explained(run_dir):
            write_json(run_dir / CONFIG_FILE, config)
            (run_dir / HISTORY_FILE).write_text(",".join(HISTORY_COLUMNS) + "\n")
        run_dirs.append(run_dir)
        configs.append(config)
        recorders.append(RunRecorder(run_dir / HISTORY_FILE))
    every_callback: list[keras.callbacks.Callback] = [
        BranchLogs(number, branch, recorder)
        for number, (branch, recorder) in enumerate(zip(branches, recorders, strict=True))]
    every_callback += callbacks
    if verbose == "epochs":
        every_callback.append(BranchLogs(0, branches[0], epoch_progress(first.epochs, " + ".join(names))))
        verbose = 0

    status, seconds = _fit(model, split, first, every_callback, int(verbose))
    trained = []
    for recipe, branch, recorder, run_dir, config in zip(recipes, branches, recorders, run_dirs, configs,
                                                          strict=True):
        if status == "interrupted" and recorder.weights is not None:
            branch.set_weights(recorder.weights)  # The weights of the last finished epoch.
        outcome = FitOutcome(status=status, recorder=recorder, stopper=None, seconds=seconds)
        with failed_writes_explained(run_dir):
            metrics = save_and_describe(branch, recipe, split, run_dir, outcome)
        trained.append(TrainedRun(folder=run_dir, model=branch, recipe=recipe, config=config, metrics=metrics,
                                  history=recorder.history()))
    if status == "interrupted":
        recorder = recorders[0]
        raise RunInterrupted(run_dirs[0], recorder.epochs, first.epochs, recorder.weights_epoch)
    return trained


def _fit(model: Branches, split: TrainingData, recipe: Recipe, callbacks, verbose: int) -> tuple[str, float]:
    """fit() the branches; ("complete" or "interrupted", seconds). Ctrl-C as `fit.until_interrupted` takes it."""
    has_validation = len(split.validation_images) > 0
    started = time.perf_counter()
    status = until_interrupted(lambda: model.fit(
        split.train_images, split.train_labels, batch_size=recipe.batch_size, epochs=recipe.epochs,
        validation_data=(split.validation_images, split.validation_labels) if has_validation else None,
        validation_batch_size=VALIDATION_BATCH_SIZE, callbacks=callbacks, verbose=verbose))
    return status, time.perf_counter() - started
