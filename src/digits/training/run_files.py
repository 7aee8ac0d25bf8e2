"""A run folder's JSON files as declared models: config.json, metrics.json and calibration.json.

`digits.training.runs` reads the files (bounded, regular files only) and validates each with its model here:
the keys digits reads must have their type, range and finiteness; keys it does not know are allowed, so a run
written by a newer digits still loads. The models validate only: readers keep the file's content as a dict.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from digits.training.declared import Choices, first_problem

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
# Written by `digits evaluate --calibrate` (and for the shipped model by benchmarks/not_a_digit.py); the name is
# digits.inference.runtime.CALIBRATION_FILE's, which reads it.
CALIBRATION_FILE = "calibration.json"

# The temperatures `digits.evaluation.calibration.fit_temperature` searches and a calibration file may hold: a
# well-trained network is rarely off by more than a factor of 10 either way.
TEMPERATURE_RANGE = (0.05, 20.0)

Count = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
Seconds = Annotated[float, Field(ge=0)]


class RunFile(BaseModel):
    """What every run file shares: strict types (a string is not a number), finite numbers, unknown keys kept."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False, frozen=True)


class StoredRecipe(RunFile):
    """config.json's `recipe`: the keys that reports and readers use without building a `Recipe`."""

    model: str = ""
    loss: str | None = None
    optimizer: str | None = None
    learning_rate: float | None = Field(None, gt=0)
    preset: str | None = None
    validation: str | None = None
    epochs: Count | None = None
    train_limit: Count | None = None
    test_limit: Count | None = None


class DataRecord(RunFile):
    """config.json's `data`: where the images came from and how many trained and validated."""

    source: str | None = None
    train_images: Count | None = None
    validation_images: Count | None = None


class ConfigFile(RunFile):
    """config.json: the recipe and everything else a reader needs to reproduce or trust the run."""

    preset: str | None = None
    recipe: StoredRecipe | None = None
    data: DataRecord | None = None
    versions: dict[str, Any] | None = None
    backend: str | None = None
    started: str | None = None
    validation: str | None = None


class TargetRecord(RunFile):
    """metrics.json's `target_accuracy`: whether and when validation accuracy reached the recipe's target."""

    target: Fraction | None = None
    reached: bool | None = None
    epoch: Count | None = None
    seconds: Seconds | None = None


class MetricsFile(RunFile):
    """metrics.json, written last: the run's status and final scores."""

    status: str = "unknown"
    epochs: Count | None = None
    validation: str | None = None
    validation_accuracy: Fraction | None = None
    # A run that diverged has a NaN or infinite loss; it is still a run to look at.
    validation_loss: float | None = Field(None, allow_inf_nan=True)
    raw_validation_accuracy: Fraction | None = None
    raw_validation_loss: float | None = Field(None, allow_inf_nan=True)
    training_seconds: Seconds | None = None
    parameters: Count | None = None
    samples_per_second: Seconds | None = None
    model_epoch: Count | None = None
    target_accuracy: TargetRecord | None = None


class NotADigitSettings(RunFile):
    """When a picture is called no digit (`digits.inference.not_a_digit_fit` measures the thresholds)."""

    score: Annotated[str, Choices(("digit_score", "max_probability"))]
    threshold: Fraction
    max_probability_threshold: Fraction | None = None
    detector: str | None = None
    command: str | None = None


class CalibrationFile(RunFile):
    """calibration.json (and the same keys in an exported model's .onnx.json): the temperature that divides the
    logits, and the not-a-digit settings."""

    temperature: float | None = Field(None, ge=TEMPERATURE_RANGE[0], le=TEMPERATURE_RANGE[1])
    not_a_digit: NotADigitSettings | None = None


MODELS: dict[str, type[RunFile]] = {CONFIG_FILE: ConfigFile, METRICS_FILE: MetricsFile,
                                    CALIBRATION_FILE: CalibrationFile}


def problem_in(content: Any, model: type[RunFile]) -> str | None:
    """What is wrong with a file's content, as the middle of a sentence ("gives recipe.model as 5, but it must be
    text"), or None when `model` accepts it."""
    try:
        model.model_validate(content)
    except ValidationError as error:
        problem = first_problem(error, model)
        if not problem.field:
            return "does not hold a JSON object"
        if problem.message:
            return f"gives {problem.field} that digits cannot use ({problem.message})"
        return f"gives {problem.field} as {problem.shown}, but it must be {problem.wanted}"
    return None
