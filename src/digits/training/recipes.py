"""Training recipes: one frozen, declared model holding every choice a run makes, and the named presets.

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


@dataclass(frozen=True)
class Preset:
    """A named recipe, what it is for, and the result the study reported for it (None if not the study's)."""

    name: str
    recipe: Recipe
    description: str
    study_result: str | None = None
    study_recipe: str | None = None
    """The study's preset this one retells faster (same model, loss and optimizer family), if any."""

    def __repr__(self) -> str:
        # The recipe's 25 fields are in `.recipe`; one line says which preset this is.
        return f"Preset({self.name!r}: {self.recipe.model}, {self.recipe.epochs} epochs; {self.description})"


class Presets(dict[str, Preset]):
    """The presets by name (what `digits.presets()` returns): a dict that prints as one line of names, and shows
    itself in a notebook as a table (digits.reporting.display.presets_table)."""

    def __repr__(self) -> str:
        return f"Presets({len(self)}: {', '.join(self)})"


def _preset(name: str, description: str, study_result: str | None = None, study_recipe: str | None = None,
            **fields) -> Preset:
    return Preset(name, Recipe(preset=name, **fields), description, study_result, study_recipe)


def study_recipe_of(preset: str) -> str | None:
    """The study's own preset that `preset` is or retells ("quick-shallow-mse" -> "seed-shallow-mse")."""
    if preset in STUDY_RESULTS:
        return preset
    return PRESETS[preset].study_recipe if preset in PRESETS else None


# The record-accuracy recipe (preset best); the shipped model's (preset pretrained) changes two of its fields.
_BEST: dict[str, Any] = dict(
    model="cnn-bn", loss="categorical_crossentropy", optimizer="adam", learning_rate=0.005, schedule="one-cycle",
    label_smoothing=0.1, augment_shift=2, augment_rotation=10.0, augment_zoom=0.1, precision="auto", epochs=30,
    validation="none",
)

# The seed presets keep the study's math; they only run it faster: a whole epoch per graph call (and XLA for the
# shallow network), which changes no loss, optimizer, learning rate, batch or epoch count.
PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in [
        _preset(
            "seed-shallow-mse",
            "the study's shallow network: MSE loss, plain SGD lr 0.01, batch 128, 500 epochs",
            "90.34 % validation accuracy (test set)",
            model="shallow", loss="mse", optimizer="sgd", learning_rate=0.01, epochs=500, jit_compile=True,
        ),
        _preset(
            "seed-shallow-poisson",
            "the study's shallow network: Poisson loss, Adadelta with Keras defaults, batch 128, 500 epochs",
            "about 82 % validation accuracy (test set)",
            model="shallow", loss="poisson", optimizer="adadelta", learning_rate=0.001, epochs=500,
            jit_compile=True,
        ),
        _preset(
            "seed-cnn",
            "the study's CNN: cross-entropy, Adam with Keras defaults, batch 128, 15 epochs",
            "99.28 % validation accuracy (test set)",
            model="cnn", loss="categorical_crossentropy", optimizer="adam", learning_rate=0.001, epochs=15,
        ),
        # The quick presets are what `digits run` trains. Each trains a fixed number of epochs chosen in advance,
        # never stopping on the test set, so its learning curves have enough points to judge overfitting. The shallow
        # ones skip XLA: compiling took longer than it saved over 10 epochs (quick-shallow 4.9 s with it against
        # 3.9 s without; quick-shallow-mse 5.2 against 3.8 s). Their settings were chosen on the holdout (the last
        # 10,000 training images, `--validation holdout`), seed 0; the figures in the comments are holdout accuracies
        # after the stated epochs.
        _preset(
            "quick-shallow-mse",
            "the study's shallow network with its MSE loss and SGD, fast: Nesterov momentum 0.9, one-cycle to lr 10, "
            "batch 256, 10 epochs (instead of plain SGD lr 0.01, batch 128, 500 epochs)",
            study_recipe="seed-shallow-mse",
            # MSE through a softmax has small gradients, so it wants a large step: peak 1 gave 95.32 %, 3 96.85 %,
            # 6 96.84 % and 10 97.08 % after 10 epochs (batch 256 from 6 on; batch 512 at 10: 96.44 %).
            model="shallow", loss="mse", optimizer="sgd", learning_rate=10.0, momentum=0.9, nesterov=True,
            schedule="one-cycle", batch_size=256, epochs=10,
        ),
        _preset(
            "quick-shallow-poisson",
            "the study's shallow network with its Poisson loss and Adadelta, fast: one-cycle to lr 20, batch 256, "
            "10 epochs (instead of Keras's default lr 0.001, batch 128, 500 epochs)",
            study_recipe="seed-shallow-poisson",
            # Keras's Adadelta default rate, 0.001, is a thousandth of the 1.0 of Adadelta's paper. Constant 1.0 gave
            # 92.87 %, 3 (batch 256) 93.75 %, 5 94.98 %, 10 95.98 %; one-cycle to 20 96.30 % after 10 epochs.
            model="shallow", loss="poisson", optimizer="adadelta", learning_rate=20.0, schedule="one-cycle",
            batch_size=256, epochs=10,
        ),
        _preset(
            "quick-shallow",
            "the study's shallow network at its best: cross-entropy, SGD Nesterov momentum 0.9 one-cycle to 0.5, "
            "batch 256, 10 epochs (instead of MSE and plain SGD lr 0.01 for 500)",
            # Peak 0.3 gave 96.91 % and 0.5 97.28 % after 10 epochs.
            model="shallow", loss="categorical_crossentropy", optimizer="sgd", learning_rate=0.5, momentum=0.9,
            nesterov=True, schedule="one-cycle", batch_size=256, epochs=10,
        ),
        _preset(
            "quick-cnn",
            "the study's CNN, fast: bfloat16 where it pays, Adam one-cycle to 0.008, ±2 px random whole-pixel shifts, "
            "batch 128, 7 epochs, the graph training loop (instead of float32 Adam 0.001, batch 128, 15 epochs)",
            study_recipe="seed-cnn",
            # Chosen to reach the study's 99.28 % on the holdout as a mean of seeds 0, 1 and 2 (one seed is too
            # noisy: they spread over 0.15 points). Batch 256 to 0.008, label smoothing 0.1, 5 epochs (the preset
            # before): seed 0 99.17 %. Without label smoothing, which cost accuracy in this short a run: batch 256,
            # 5 epochs 99.23 / 99.20 / 99.11 % (mean 99.18); to 0.012, 6 epochs 99.26 / 99.21 / 99.17 (99.21);
            # batch 128 to 0.008, 6 epochs 99.30 / 99.28 / 99.19 (99.26), 7 epochs 99.27 / 99.35 / 99.21 (99.28).
            # On this AMX CPU a batch of 128 trains nearly as many images per second in bfloat16 as 256 (about 7 %
            # fewer, measured side by side on a busy machine), so 7 epochs of 128 cost about 1.5x 5 of 256.
            # Earlier, with label smoothing: batch 128 to 0.006, 3, 4 and 5 epochs gave 99.05, 99.13 and 99.18 %;
            # batch 512 to 0.012 or 0.016: 99.07 % after 5 and 99.16 % after 6.
            # The graph loop: on a 2-core AMD EPYC, fit() kept both cores busy for 4 epochs, then one (half the
            # CPU idle, epochs of 10 s instead of 6); the graph loop keeps both busy (7 epochs in 42.6 s against
            # 57.9 s alone, quiet; 50.3 s against 73.0 s inside `digits run`). Holdout, seeds 0-2: 99.30 / 99.34 /
            # 99.28 % against fit()'s 99.30 / 99.31 / 99.28 %.
            # Batch 512 to 0.024, 8 epochs, kept the accuracy (holdout 99.34 / 99.29 / 99.31 %, mean 99.31; 7 epochs
            # 99.26) and its epochs took about 0.77x those of 128 on a quiet AMD EPYC, but at load 2-9 its 8 epochs
            # took 0.83-1.35x the time of 7 of 128 (geometric mean 1.01x, four pairs) and `digits run` 1.24x; on the
            # quiet machine, in turns, 1.05x and 0.98x: the eighth epoch takes back what the batch saves, so batch
            # 128 stays (docs/speed.md).
            model="cnn", loss="categorical_crossentropy", optimizer="adam", learning_rate=0.008,
            schedule="one-cycle", augment_shift=2, precision="auto", batch_size=128, epochs=7,
            training_loop="graph",
        ),
        _preset(
            "speedrun",
            "a CPU speedrun to 99 % test accuracy: the small cnn-speedrun (tuomaso/train_mnist_fast's record "
            "network), one epoch of all 60,000 training images at batch 256, Adam one-cycle to 0.01 with betas 0.7 "
            "and 0.9, bfloat16 where it pays, fed from memory by the graph training loop. Not part of `digits run`: "
            "it trades away accuracy (99.10 % as a mean of 5 seeds, against quick-cnn's 99.15 % and best's 99.59 %) "
            "and robustness to off-centre digits (no augmentation: 95.3 % of the test digits moved by 2 pixels, "
            "against 98.8 % for quick-cnn) for time. "
            "Chosen with --validation holdout",
            # Chosen on the holdout slice (the last 10,000 training images): one epoch of the first 50,000 in
            # bfloat16 scored 98.98 % as a mean of seeds 0-4 (98.92-99.06 %), against 98.89 % (98.82-98.97 %) for the
            # record's own recipe ported to PyTorch (benchmarks/speedrun.py), which scores 99.07 % on the test set.
            # Keras's default betas (0.9, 0.999) gave 98.74 and 98.69 % (float32, seeds 0 and 1); batch 512 with a
            # peak of 0.015 or 0.02, 98.78 and 98.84 % (seeds 0-2); convolutions of 16 and 24 instead of 24 and 32,
            # 98.79 % (seeds 0-2). With the graph training loop (NumPy's shuffle instead of tf.data's; everything else
            # the same) the holdout scored 98.90 % (98.82-98.98 %, seeds 0-4): still above the port's 98.89 %.
            model="cnn-speedrun", loss="categorical_crossentropy", optimizer="adam", learning_rate=0.01, beta_1=0.7,
            beta_2=0.9, schedule="one-cycle", precision="auto", batch_size=256, epochs=1, validation="none",
            # The epoch's 235 steps as two graph calls, 118 and 117: the second call's time tells how much of the
            # first went into building the graph (benchmarks/speedrun.py); the one extra return to Python is free.
            # The graph loop skips fit()'s tf.data pipeline: side by side on a busy AMD EPYC (seeds 0-5), training took
            # 7.99 s against fit()'s 10.41 s on average (1.30x; median pair 1.39x) and 9 % less CPU; at load 3-4,
            # 6.12 s against 6.61 s (1.08x; benchmarks/speedrun.py --reference fit, docs/speed.md).
            steps_per_execution=118, training_loop="graph",
        ),
        _preset(
            "best",
            "record accuracy: cnn-bn (batch norm, 32-64-128 channels); each training image warped once by a random "
            "±10° rotation, ±10 % zoom and ±2 px shift; label smoothing 0.1, Adam one-cycle to 0.005, bfloat16 where "
            "it pays, 30 epochs on all 60,000 training images. Chosen with --validation holdout, so the test "
            "set stays unseen until `digits evaluate`",
            # Chosen on the holdout slice (the last 10,000 training images), never the test set; seed 0, 30 epochs:
            # three Keras layers resampling in turn 99.56 %, one RandomWarp resampling once 99.65 %; adding a 1.5 px
            # elastic bend was still 0.3 points behind at epoch 23 (99.28 %), so it is left out. Earlier: 36 epochs
            # 99.60 % against 99.44–99.51 % for 15; a deeper variant (two convolutions in blocks 2 and 3) 99.58 %.
            **_BEST,
        ),
        _preset(
            "pretrained",
            "the model shipped inside digits (what `digits predict` and `digits serve` use without --model): best's "
            "cnn-bn, random warp, label smoothing and Adam one-cycle to 0.005, in float32 so that it runs at full "
            "speed on any CPU, 20 epochs on all 60,000 training images. Chosen with --validation holdout",
            # Chosen on the holdout slice, seed 0: these 20 float32 epochs scored 99.62 % there, `best`'s 30 bfloat16
            # epochs 99.65 %. A model trained in bfloat16 also computes in bfloat16 wherever it is loaded, which a CPU
            # without native bfloat16 emulates slowly; the shipped model must be quick on every CPU.
            **{**_BEST, "precision": "float32", "epochs": 20},
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
    optimizer = changes.get("optimizer")
    if optimizer in DEFAULT_LEARNING_RATES and optimizer != recipe.optimizer:
        changes.setdefault("learning_rate", DEFAULT_LEARNING_RATES[optimizer])
        changes.setdefault("momentum", 0.0)
        changes.setdefault("nesterov", False)
    return recipe.replace(**changes)
