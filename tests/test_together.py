"""The study's shallow networks trained together, as branches of one model in one fit(): each is the run it would be
alone, in a run folder of its own."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from digits.data.mnist import load_mnist
from digits.errors import DigitsError
from digits.study import training_groups
from digits.training.fit import RunInterrupted, train
from digits.training.presets import get_preset
from digits.training.recipes import with_overrides
from digits.training.runs import load_model, load_run
from digits.training.together import can_train_together, train_together

SHALLOW_PRESETS = ("quick-shallow-mse", "quick-shallow-poisson", "quick-shallow")


@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


def small(name: str, **changes):
    return with_overrides(get_preset(name), **{"train_limit": 1500, "test_limit": 300, "epochs": 2, **changes})


def test_each_branch_is_the_run_its_recipe_makes_alone(mnist, tmp_path):
    recipes = [small(name) for name in SHALLOW_PRESETS]
    together = train_together(recipes, mnist, tmp_path / "together", verbose=0)
    alone = [train(recipe, mnist, tmp_path / "alone", verbose=0) for recipe in recipes]
    for by_itself, branch in zip(alone, together, strict=True):
        assert branch.recipe.preset == by_itself.recipe.preset
        # The same weights and the same figures per epoch: the same seed gives the same run, alone or together.
        for weights, branch_weights in zip(by_itself.model.get_weights(), branch.model.get_weights(), strict=True):
            np.testing.assert_array_equal(weights, branch_weights)
        for column in ("loss", "accuracy", "val_loss", "val_accuracy"):
            np.testing.assert_array_equal(by_itself.history[column], branch.history[column])
        assert branch.metrics["validation_accuracy"] == by_itself.metrics["validation_accuracy"]
        # Its folder is a complete run of its own, whose saved model is the branch alone.
        run = load_run(branch.folder)
        assert run.config["trained_together_with"] == [name for name in SHALLOW_PRESETS if name != run.config["preset"]]
        assert load_model(run).count_params() == 50_890
        assert len((branch.folder / "history.csv").read_text().splitlines()) == 1 + 2


def test_the_study_trains_its_shallow_networks_together_and_its_cnn_alone():
    recipes = [get_preset(name) for name in (*SHALLOW_PRESETS, "quick-cnn")]
    assert [[recipe.preset for recipe in group] for group in training_groups(recipes)] == [
        list(SHALLOW_PRESETS), ["quick-cnn"]]
    # Recipes fed different batches cannot share them.
    assert not can_train_together([small("quick-shallow"), small("quick-shallow-mse", batch_size=128)])
    assert not can_train_together([small("quick-shallow"), small("quick-shallow-mse", seed=1)])
    assert not can_train_together([small("quick-shallow"), small("quick-shallow-mse", training_loop="graph")])


def test_recipes_that_cannot_share_their_batches_are_refused_in_one_sentence(mnist, tmp_path):
    with pytest.raises(DigitsError, match="cannot be trained together"):
        train_together([small("quick-shallow"), small("quick-cnn")], mnist, tmp_path, verbose=0)


class InterruptAt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == 1:
            raise KeyboardInterrupt


def test_ctrl_c_closes_every_branch_with_its_last_finished_epoch(mnist, tmp_path):
    recipes = [small(name, epochs=3) for name in SHALLOW_PRESETS]
    with pytest.raises(RunInterrupted) as caught:
        train_together(recipes, mnist, tmp_path, verbose=0, callbacks=[InterruptAt()])
    assert caught.value.epochs == 1
    folders = sorted(path for path in tmp_path.iterdir() if path.is_dir())
    assert len(folders) == 3
    for folder in folders:
        metrics = json.loads((folder / "metrics.json").read_text())
        assert (metrics["status"], metrics["epochs"], metrics["model_epoch"]) == ("interrupted", 1, 1)
        assert (folder / "model.keras").is_file()
