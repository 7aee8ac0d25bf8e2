"""Training recipes: one frozen, declared model holding every choice a run makes (the named ones: `presets`).

This module imports no Keras (nor does digits.training.models until it builds), so the CLI can reject a bad preset,
model, loss or optimizer name at once.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ModelWrapValidatorHandler, ValidationError, model_validator
from pydantic_core import PydanticUndefined

from digits.errors import DigitsError
from digits.training.declared import UNKNOWN_NAME, Choices, Problem, first_problem
from digits.training.models import MODELS, PRECISIONS, check_augmentation

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

VALIDATIONS = ("test", "holdout", "none")
TRAINING_LOOPS = ("fit", "graph")

# "constant": the learning rate never changes (the study). "one-cycle": linear warm-up from 0 to the learning
# rate over the first 20 % of the steps, then linear decay to 0 at the last step (digits.training.schedules.OneCycle).
SCHEDULES = ("constant", "one-cycle")

# The study's own results (validation on the test set), which the report and `digits run` set ours beside.
STUDY_ACCURACY = {"shallow": 0.9034, "cnn": 0.9928}


@dataclass(frozen=True)
class StudyFigure:
    """What the study reported for one of its recipes."""

    accuracy: float
    """Test accuracy (the study validated on the test set), a fraction."""
    words: str
    """How the study put it, for sentences: "90.34 % after 500 epochs"."""


STUDY_RESULTS: dict[str, StudyFigure] = {
    "seed-shallow-mse": StudyFigure(0.9034, "90.34 % after 500 epochs"),
    "seed-shallow-poisson": StudyFigure(0.82, "about 82 % after 500 epochs"),
    "seed-cnn": StudyFigure(0.9928, "99.28 % after 15 epochs (72 mistakes)"),
}

# `--validation holdout` keeps the last 10,000 training images aside, as Keras's own MNIST examples do.
HOLDOUT_SIZE = 10_000
# Every number a recipe holds has an upper bound too, checked before any work: a batch of 2**63 images crashed
# Python (a segmentation fault) after the run folder was made, and a seed above 2**32 - 1 was a traceback.
# MNIST has 60,000 training images: a bigger batch, training limit or count of steps per call means nothing.
TRAINING_IMAGES = 60_000
# The largest seed NumPy and Python's random accept together with TensorFlow: 2**32 - 1.
MAX_SEED = 2**32 - 1
# The study's longest recipes train 500 epochs; 100,000 is a limit no one reaches by choice.
MAX_EPOCHS = 100_000


# Every field of a Recipe declares its type, range and a description (which `digits train --help` shows); pydantic
# validates them all, in strict mode so that a string is never taken for a number.
SETTINGS = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


def _setting(description: str, default: Any = PydanticUndefined, *, unit: str | None = None, ge: float | None = None,
             gt: float | None = None, le: float | None = None, lt: float | None = None) -> Any:
    """A Recipe field: its description, default, bounds and unit, which errors and `digits train --help` show."""
    return Field(default, description=description, json_schema_extra={"unit": unit} if unit else None, ge=ge, gt=gt,
                 le=le, lt=lt)


class Recipe(BaseModel):
    """Everything that decides what a training run does; config.json records all of it.

    A frozen pydantic model: build it with keywords (`Recipe(model="cnn", ...)`), change it with `with_overrides`
    or `replace`; a value it cannot take is one DigitsError sentence naming the field.
    """

    model_config = SETTINGS

    model: Annotated[str, Choices(MODELS)] = _setting(
        "Architecture (`digits models` lists them): the study's shallow network, its CNN, or the CNN with batch norm.")
    loss: Annotated[str, Choices(LOSSES)] = _setting(
        "Loss function, computed on one-hot labels: cross-entropy, mean squared error or Poisson (the study's two "
        "shallow recipes compare mse and poisson).")
    optimizer: Annotated[str, Choices(OPTIMIZERS)] = _setting(
        "Optimizer, with Keras's defaults for every setting but the ones below.")
    learning_rate: float = _setting(
        "Optimizer step size: constant over the run, or the peak of a one-cycle schedule; switching optimizer "
        "without it takes that optimizer's Keras default.", gt=0, le=1000)
    epochs: int = _setting("Passes over the training images.", ge=1, le=MAX_EPOCHS)
    batch_size: int = _setting("Images per gradient step; 128 is the study's.", 128, ge=1, le=TRAINING_IMAGES)
    momentum: float = _setting(
        "SGD momentum (0 = plain SGD, as in the study); ignored by the other optimizers.", 0.0, ge=0, lt=1)
    nesterov: bool = _setting(
        "SGD with Nesterov momentum instead of classical momentum; ignored by the other optimizers.", False)
    beta_1: float = _setting(
        "Adam's decay of its running mean of gradients (Keras's default 0.9); ignored by the other optimizers.",
        0.9, ge=0, lt=1)
    beta_2: float = _setting(
        "Adam's decay of its running mean of squared gradients (Keras's default 0.999); ignored by the other "
        "optimizers.", 0.999, ge=0, lt=1)
    schedule: Annotated[str, Choices(SCHEDULES)] = _setting(
        "Learning-rate schedule: constant (the study's) or one-cycle (linear warm-up over the first 20 % of the "
        "steps to the learning rate, then linear decay to 0).", "constant")
    label_smoothing: float = _setting(
        "Cross-entropy against labels smoothed to 1 - x on the class and x / 10 spread over all ten (0 = none, as in "
        "the study); only with the categorical_crossentropy loss.", 0.0, ge=0, lt=1)
    augment_shift: int = _setting(
        "Random-shift augmentation (the CNNs only): each training image moves by up to this many pixels, done by a "
        "parameter-free layer in front of the model that is inactive at inference (0 = none).", 0, unit="pixels",
        ge=0, le=8)
    augment_rotation: float = _setting(
        "Random-rotation augmentation (the CNNs only): each training image turns by up to this many degrees either "
        "way (0 = none); like the shift, a layer that is inactive at inference.", 0.0, unit="degrees", ge=0, le=45)
    augment_zoom: float = _setting(
        "Random-zoom augmentation (the CNNs only): each training image is scaled by up to this fraction either way "
        "(0.1 = 90-110 %; 0 = none); inactive at inference.", 0.0, unit="(a fraction)", ge=0, le=0.5)
    augment_elastic: float = _setting(
        "Elastic-distortion augmentation (the CNNs only): each training image is bent by a smooth random "
        "displacement of about this many pixels (0 = none), resampled together with the rotation, zoom and shift.",
        0.0, unit="pixels", ge=0, le=4)
    weight_averaging: bool = _setting(
        "Keep an exponential moving average of the weights (Keras's use_ema, momentum 0.99) and save that average "
        "as the model; the per-epoch validation scores the raw weights, metrics.json both.", False)
    precision: Annotated[str, Choices(PRECISIONS)] = _setting(
        "Arithmetic: float32 (the study's), mixed_bfloat16, or auto (bfloat16 where a short measurement on this CPU "
        "model found it faster; the choice is kept in the user cache); bfloat16 changes the last digits of "
        "results, not the recipe.", "float32")
    steps_per_execution: int | None = _setting(
        "Batches Keras runs per call into the compiled graph (None = one whole epoch): it amortises the per-step "
        "overhead that dominates the small shallow network and does not change the math.", None, ge=1,
        le=TRAINING_IMAGES)
    jit_compile: Annotated[bool | str, Choices((True, False, "auto"))] = _setting(
        "XLA compilation: true, false or auto (Keras decides; off on a CPU); true speeds up the shallow network, "
        "but never use it for the CNN on a CPU, where XLA's convolutions are about 13x slower.", "auto")
    training_loop: Annotated[str, Choices(TRAINING_LOOPS)] = _setting(
        "How batches reach the compiled steps: fit (Keras's fit() and its tf.data pipeline) or graph (the uint8 "
        "images as one tensor, shuffled by NumPy each epoch, batches sliced and scaled inside the graph: no pipeline "
        "to start or shut down, which saves seconds on a one-epoch run; the same math, another shuffle order).",
        "fit")
    target_accuracy: float | None = _setting(
        "Stop at the end of the first epoch whose validation accuracy reaches this fraction, 0.99 for 99 % (None = "
        "train every epoch); with the test set as validation, the time taken is only the time to reach it.", None,
        unit="(a fraction: 0.99 for 99 %)", ge=0, le=1)
    seed: int = _setting(
        "Seeds Python, NumPy and the backend: weight initialisation, shuffling, dropout and augmentation follow "
        "from it.", 0, ge=0, le=MAX_SEED)
    validation: Annotated[str, Choices(VALIDATIONS)] = _setting(
        "Which images score each epoch: test (the 10,000 test images, as the study did), holdout (the last 10,000 "
        "training images, training on the first 50,000, so the test set stays unseen) or none (train on all 60,000 "
        "and score nothing per epoch: the final model of a recipe chosen on the holdout).", "test")
    train_limit: int | None = _setting(
        "Train on only the first N training images (None = all); for tests and quick tries.", None, ge=1,
        le=TRAINING_IMAGES)
    test_limit: int | None = _setting(
        "Validate on only the first N validation images (None = all); for tests and quick tries.", None, ge=1,
        le=TRAINING_IMAGES)
    preset: str = _setting("The preset this recipe started from; it names the run folder.", "custom")

    @model_validator(mode="after")
    def _check_combinations(self) -> Recipe:
        if self.label_smoothing and self.loss != "categorical_crossentropy":
            raise ValueError(f"Label smoothing works with the categorical_crossentropy loss only, not {self.loss}; "
                             "drop `label_smoothing` or use `loss=categorical_crossentropy`.")
        check_augmentation(self.model, shift=self.augment_shift, rotation=self.augment_rotation,
                           zoom=self.augment_zoom, elastic=self.augment_elastic)
        if self.training_loop == "graph" and self.jit_compile is True:
            raise ValueError("The graph training loop runs without XLA (XLA asked for tens of gigabytes to compile "
                             "its whole epoch); use `jit_compile=auto` or `training_loop=fit`.")
        if self.target_accuracy is not None and self.validation == "none":
            raise ValueError("Stopping at a target accuracy needs a validation set, but the validation is 'none'; "
                             "use `validation=holdout` or `validation=test`, or `target_accuracy=None`.")
        return self

    @model_validator(mode="wrap")  # Defined last: it wraps the check above too.
    @classmethod
    def _one_sentence(cls, data: Any, handler: ModelWrapValidatorHandler[Recipe]) -> Recipe:
        # Recipes are built from command-line values and notebook keywords: every refusal is one sentence.
        try:
            return handler(data)
        except ValidationError as error:
            raise DigitsError(_sentence(first_problem(error, cls))) from None

    def replace(self, **changes: Any) -> Recipe:
        """This recipe with `changes`, checked like any recipe (pydantic's `model_copy` would not check them)."""
        return Recipe(**{**self.model_dump(), **changes})


def _sentence(problem: Problem) -> str:
    """A refused recipe value as one sentence naming the setting (`first_problem` found it)."""
    if problem.message:
        return problem.message
    if problem.kind == "extra_forbidden":
        names = list(Recipe.model_fields)
        close = difflib.get_close_matches(problem.field, names, n=1)
        return f"`{problem.field}` is not a recipe setting" + (
            f"; did you mean `{close[0]}`?" if close else f"; the settings are {', '.join(names)}.")
    if problem.kind == UNKNOWN_NAME and problem.choices is not None:
        return f"Unknown {problem.field} {problem.shown}; choose one of: {problem.choices.words}."
    if problem.kind == "missing":
        return f"A recipe needs `{problem.field}`; give it a value."
    if not problem.field:
        return f"A recipe is a set of named settings, not {problem.shown}."
    return f"`{problem.field}` must be {problem.wanted}, not {problem.shown}."


def with_overrides(recipe: Recipe, **overrides) -> Recipe:
    """`recipe` with the given fields replaced; None means "keep the recipe's value".

    Switching optimizer without naming a learning rate takes that optimizer's Keras default (and no
    momentum), so `--optimizer adam` on an SGD recipe means Adam as Keras ships it, not Adam at SGD's rate.
    """
    changes = {name: value for name, value in overrides.items() if value is not None}
    optimizer = changes.get("optimizer")
    if optimizer in DEFAULT_LEARNING_RATES and optimizer != recipe.optimizer:
        changes.setdefault("learning_rate", DEFAULT_LEARNING_RATES[optimizer])
        changes.setdefault("momentum", 0.0)
        changes.setdefault("nesterov", False)
    return recipe.replace(**changes)
