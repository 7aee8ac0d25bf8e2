"""Training recipes: one frozen dataclass holding every choice a run makes, and the named presets.

This module imports no Keras, so the CLI can reject a bad preset, loss or optimizer name at once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from digits.errors import DigitsError

# Loss names are Keras's own identifiers; every loss is computed on one-hot labels.
LOSSES: dict[str, str] = {
    "categorical_crossentropy": "cross-entropy of the softmax against the one-hot label",
    "mse": "mean squared error between the softmax and the one-hot label",
    "poisson": "Poisson loss, mean(p - y·log p)",
}

# Each optimizer with its Keras 3 default learning rate, used when a recipe switches optimizer.
DEFAULT_LEARNING_RATES: dict[str, float] = {
    "sgd": 0.01,
    "adam": 0.001,
    "adadelta": 0.001,
    "rmsprop": 0.001,
}
OPTIMIZERS = tuple(DEFAULT_LEARNING_RATES)

VALIDATIONS = ("test", "holdout")

# `--validation holdout` keeps the last 10,000 training images aside, as Keras's own MNIST examples do.
HOLDOUT_SIZE = 10_000


@dataclass(frozen=True)
class Recipe:
    """Everything that decides what a training run does; config.json records all of it."""

    model: str
    """Architecture, a name in `digits.models.MODELS` ("shallow", "cnn")."""
    loss: str
    """Loss function, a name in `LOSSES`."""
    optimizer: str
    """Optimizer, a name in `OPTIMIZERS`; all its settings are Keras's defaults except those below."""
    learning_rate: float
    """Optimizer step size (constant over the run)."""
    epochs: int
    """Passes over the training images."""
    batch_size: int = 128
    """Images per gradient step; 128 is the study's."""
    momentum: float = 0.0
    """SGD momentum (0 = plain SGD, as in the study); ignored by the other optimizers."""
    seed: int = 0
    """Seeds Python, NumPy and the backend: weight initialisation, shuffling and dropout follow from it."""
    validation: str = "test"
    """Which images score each epoch: "test" (the 10,000 test images, as the study did) or "holdout"
    (the last 10,000 training images, training on the first 50,000, so the test set stays unseen)."""
    train_limit: int | None = None
    """Train on only the first N training images (None = all); for tests and quick tries."""
    test_limit: int | None = None
    """Validate on only the first N validation images (None = all); for tests and quick tries."""
    preset: str = "custom"
    """The preset this recipe started from; it names the run folder."""

    def __post_init__(self) -> None:
        # Recipes are built from command-line values, so every check ends in a sentence for the user.
        if self.loss not in LOSSES:
            raise DigitsError(f"Unknown loss {self.loss!r}; choose one of: {', '.join(LOSSES)}.")
        if self.optimizer not in OPTIMIZERS:
            raise DigitsError(f"Unknown optimizer {self.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}.")
        if self.validation not in VALIDATIONS:
            raise DigitsError(f"Unknown validation {self.validation!r}; choose one of: {', '.join(VALIDATIONS)}.")
        if not self.learning_rate > 0:
            raise DigitsError(f"The learning rate must be above 0, not {self.learning_rate}.")
        if not 0 <= self.momentum < 1:
            raise DigitsError(f"The momentum must be in [0, 1), not {self.momentum}.")
        for name in ("epochs", "batch_size", "train_limit", "test_limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise DigitsError(f"The {name.replace('_', ' ')} must be at least 1, not {value}.")
        if self.seed < 0:
            raise DigitsError(f"The seed must be 0 or more, not {self.seed}.")


@dataclass(frozen=True)
class Preset:
    """A named recipe, what it is for, and the result the study reported for it (None if not the study's)."""

    name: str
    recipe: Recipe
    description: str
    study_result: str | None = None


def _preset(name: str, description: str, study_result: str | None = None, **fields) -> Preset:
    return Preset(name, Recipe(preset=name, **fields), description, study_result)


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in [
        _preset(
            "seed-shallow-mse",
            "the study's shallow network: MSE loss, plain SGD lr 0.01, batch 128, 500 epochs",
            "90.34 % validation accuracy (test set)",
            model="shallow", loss="mse", optimizer="sgd", learning_rate=0.01, epochs=500,
        ),
        _preset(
            "seed-shallow-poisson",
            "the study's shallow network: Poisson loss, Adadelta with Keras defaults, batch 128, 500 epochs",
            "about 82 % validation accuracy (test set)",
            model="shallow", loss="poisson", optimizer="adadelta", learning_rate=0.001, epochs=500,
        ),
        _preset(
            "seed-cnn",
            "the study's CNN: cross-entropy, Adam with Keras defaults, batch 128, 15 epochs",
            "99.28 % validation accuracy (test set)",
            model="cnn", loss="categorical_crossentropy", optimizer="adam", learning_rate=0.001, epochs=15,
        ),
        _preset(
            "quick-shallow",
            "the study's shallow network, fast: cross-entropy and Adam lr 0.003 for 12 epochs instead of the "
            "study's MSE and SGD for 500; about 97.3 % in about 15 s",
            model="shallow", loss="categorical_crossentropy", optimizer="adam", learning_rate=0.003, epochs=12,
        ),
        _preset(
            "quick-cnn",
            "the study's CNN, fast: the study's cross-entropy and Adam, but batch 64 for 5 epochs instead of "
            "batch 128 for 15; about 99.0 % in about a minute",
            model="cnn", loss="categorical_crossentropy", optimizer="adam", learning_rate=0.001, batch_size=64,
            epochs=5,
        ),
    ]
}


def get_preset(name: str) -> Recipe:
    """The recipe of a named preset."""
    if name not in PRESETS:
        raise DigitsError(f"Unknown preset {name!r}; choose one of: {', '.join(PRESETS)}.")
    return PRESETS[name].recipe


def with_overrides(recipe: Recipe, **overrides) -> Recipe:
    """`recipe` with the given fields replaced; None means "keep the recipe's value".

    Switching optimizer without naming a learning rate takes that optimizer's Keras default (and no
    momentum), so `--optimizer adam` on an SGD recipe means Adam as Keras ships it, not Adam at SGD's rate.
    """
    changes = {name: value for name, value in overrides.items() if value is not None}
    unknown = set(changes) - {field.name for field in dataclasses.fields(Recipe)}
    if unknown:
        raise TypeError(f"Recipe has no field(s) {', '.join(sorted(unknown))}")
    optimizer = changes.get("optimizer")
    if optimizer in DEFAULT_LEARNING_RATES and optimizer != recipe.optimizer:
        changes.setdefault("learning_rate", DEFAULT_LEARNING_RATES[optimizer])
        changes.setdefault("momentum", 0.0)
    return dataclasses.replace(recipe, **changes)
