"""Search spaces: a TOML file naming a base preset, fixed Recipe fields and the ranges a sweep explores.

This module imports neither Optuna nor Keras: a bad space file is refused at once, in one sentence. A space
never touches the test set: every trial validates on the holdout (the last 10,000 training images), so the
space may not set `validation` at all.

    base = "quick-cnn"            # a preset (`digits presets`); its recipe is the starting point
    trial_seconds = 300           # optional: stop a trial at the first epoch end past this many seconds

    [fixed]                       # Recipe fields every trial shares
    epochs = 3

    [search.learning_rate]        # a float range; log = true samples it log-uniformly
    low = 0.001
    high = 0.01
    log = true

    [search.batch_size]           # a choice among values
    choices = [128, 256, 512]

    [pruner]                      # "median" (default), "successive-halving" or "none"
    kind = "median"
    startup_trials = 3            # trials that run to the end before any is pruned
    warmup_epochs = 1             # epochs every trial trains before it may be pruned
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from digits.errors import DigitsError
from digits.training.declared import Choices, first_problem
from digits.training.file_access import read_bounded
from digits.training.presets import PRESETS, get_preset
from digits.training.recipes import MAX_SEED, Recipe, with_overrides

SWEEPS_DIR = "sweeps"  # under the runs folder: the default SQLite file and each study's trial folders
# What every trial validates on; "test" would choose recipes on the test set, "none" would score nothing.
SWEEP_VALIDATION = "holdout"
PRUNERS = ("median", "successive-halving", "none")
SAMPLERS = ("tpe", "random")
# Fields a space may not set: the validation is the sweep's (see above), the preset names the base.
RESERVED_FIELDS = ("validation", "preset")
RECIPE_FIELDS = Recipe.model_fields
# A space file is a few hundred bytes written by hand; its lists are short. Bigger ones are refused before the
# sampler sees them: a million choices took 37 s and 1.4 GB, and TOML nested 100,000 deep was a RecursionError.
MAX_SPACE_FILE_BYTES = 1 * 2**20
MAX_CHOICES = 1000
# Pruner settings and a trial's time limit: a week of seconds, and more trials or epochs than any sweep runs.
MAX_TRIAL_SECONDS = 7 * 24 * 3600
MAX_PRUNER_COUNT = 100_000


@dataclass(frozen=True)
class Dimension:
    """One Recipe field a sweep varies: a numeric range (low..high, maybe log) or a list of choices."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple | None = None
    integer: bool = False  # sample whole numbers (the Recipe field is an int)


@dataclass(frozen=True)
class SearchSpace:
    """A parsed, checked space file."""

    name: str
    base: str
    fixed: dict[str, Any]
    dimensions: tuple[Dimension, ...]
    description: str = ""
    trial_seconds: float | None = None
    sampler: str = "tpe"
    seed: int | None = None  # the sampler's seed (None: a fresh one each run)
    pruner: dict[str, Any] = field(default_factory=lambda: {"kind": "median"})
    source: str = ""

    def base_recipe(self) -> Recipe:
        """The base preset with the fixed fields, validating on the holdout, training every epoch."""
        recipe = get_preset(self.base).replace(target_accuracy=None, validation=SWEEP_VALIDATION)
        return with_overrides(recipe, **self.fixed)

    def recipe(self, suggest: Callable[[Dimension], Any]) -> Recipe:
        """The trial's recipe: the base recipe with each dimension's suggested value."""
        return with_overrides(self.base_recipe(), **{dimension.name: suggest(dimension)
                                                     for dimension in self.dimensions})


def shipped_spaces() -> dict[str, Path]:
    """The spaces that ship with digits, by name (the file name without .toml)."""
    folder = resources.files("digits.sweeps") / "spaces"
    return {Path(entry.name).stem: Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith(".toml")}


def load_space(path_or_name: str | Path) -> SearchSpace:
    """Read and check a space file, given as a path or the name of a shipped space."""
    path = Path(path_or_name)
    shipped = shipped_spaces()
    if not path.exists():  # A pipe or a folder at the path is refused by read_bounded below, in words.
        if str(path_or_name) in shipped:
            path = shipped[str(path_or_name)]
        else:
            raise DigitsError(f"There is no space file {path_or_name}; give a TOML file or a shipped space "
                              f"({', '.join(sorted(shipped))}).")
    try:
        # A pipe or a device is refused unread, and at most MAX_SPACE_FILE_BYTES are read.
        content = tomllib.loads(read_bounded(path, MAX_SPACE_FILE_BYTES).decode("utf-8"))
    except OSError as error:
        raise DigitsError(f"Cannot read the space file {path} ({error.strerror or error}); check the path.") from None
    except RecursionError:
        raise DigitsError(f"The space file {path} is nested too deeply to be a space; write its tables as the "
                          "shipped spaces do.") from None
    except tomllib.TOMLDecodeError as error:
        raise DigitsError(f"The space file {path} is not valid TOML ({error}); fix that line.") from None
    except ValueError as error:  # Not UTF-8, or refused by read_bounded (it says why).
        raise DigitsError(f"Cannot read the space file {path} ({str(error)[:200]}); give a TOML space file.") from None
    return parse_space(content, name=path.stem, source=str(path))


# --- the file, declared -------------------------------------------------------------------------------

# Space files are TOML written by hand: strict types (a string is not a number), finite numbers, no unknown keys.
SPACE_FILE = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


def _scalars_once(choices: list) -> list:
    if len(choices) > MAX_CHOICES:
        raise ValueError(f"lists {len(choices):,} values; a sweep chooses among at most {MAX_CHOICES:,}")
    if any(not isinstance(choice, str | int | float | bool) for choice in choices):
        raise ValueError("may hold only strings, numbers and booleans")
    if len(set(map(repr, choices))) < len(choices):
        raise ValueError("lists a value twice; list each once")
    return choices


class ChoicesTable(BaseModel):
    """`[search.FIELD]` with `choices`: the values a trial picks among."""

    model_config = SPACE_FILE
    choices: Annotated[list[Any], Field(min_length=1), AfterValidator(_scalars_once)]


class RangeTable(BaseModel):
    """`[search.FIELD]` with `low` and `high`: a numeric range, sampled log-uniformly with `log`, in `step`s."""

    model_config = SPACE_FILE
    low: int | float
    high: int | float
    log: bool = False
    step: int | float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _check_ends(self) -> RangeTable:
        if not self.low < self.high:
            raise ValueError(f"needs numbers with low below high, not low={self.low!r}, high={self.high!r}")
        if self.log and self.low <= 0:
            raise ValueError(f"is log-uniform, so low must be above 0, not {self.low!r}")
        if self.log and self.step is not None:
            raise ValueError("has a step, which cannot go with log = true")
        return self


class PrunerTable(BaseModel):
    """`[pruner]`: which Optuna pruner stops trials that fall behind, and when it may start."""

    model_config = SPACE_FILE
    kind: Annotated[str, Choices(PRUNERS)] = "median"
    startup_trials: int | None = Field(None, ge=0, le=MAX_PRUNER_COUNT,
                                       description="trials that run to the end before any is pruned")
    warmup_epochs: int | None = Field(None, ge=0, le=MAX_PRUNER_COUNT,
                                      description="epochs every trial trains before it may be pruned")


class SpaceFile(BaseModel):
    """A space file as written (the module's docstring shows one); `parse_space` checks it against the Recipe."""

    model_config = SPACE_FILE
    description: str = ""
    base: str
    trial_seconds: float | None = Field(None, gt=0, le=MAX_TRIAL_SECONDS, json_schema_extra={"unit": "seconds"})
    sampler: Annotated[str, Choices(SAMPLERS)] = "tpe"
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    fixed: dict[str, Any] = {}
    search: dict[str, dict[str, Any]] = {}
    pruner: PrunerTable = PrunerTable()


def _validated(model: type[BaseModel], content: Any, where: str, prefix: str = "") -> Any:
    """`content` validated by `model`; pydantic's complaint as one sentence starting with `where`."""
    try:
        return model.model_validate(content)
    except ValidationError as error:
        problem = first_problem(error, model)
    field = (prefix + problem.field).rstrip(".")
    if problem.message:
        sentence = f"{field} {problem.message}"
    elif problem.kind == "extra_forbidden":
        holder = PrunerTable if field.startswith("pruner.") else model
        sentence = f"unknown key {field}; use {', '.join(holder.model_fields)}"
    elif problem.kind == "missing":
        sentence = f"{field} is missing; add it"
    else:
        wanted = problem.wanted.replace("an object", "a table")
        sentence = f"{field or 'the file'} must be {wanted}, not {problem.shown}"
    raise DigitsError(f"{where}: {sentence}.")


def parse_space(content: dict, *, name: str, source: str = "") -> SearchSpace:
    """Check a space file's content (a dict as tomllib reads it) and build the SearchSpace."""
    where = source or name
    if content.get("base") not in PRESETS:
        raise DigitsError(f"{where}: base must name a preset ({', '.join(PRESETS)}), not {content.get('base')!r}.")
    space_file: SpaceFile = _validated(SpaceFile, content, where)
    fixed, search = space_file.fixed, space_file.search
    if not search:
        raise DigitsError(f"{where}: a sweep needs at least one [search.FIELD] table saying what to vary.")
    for key in [*fixed, *search]:
        _check_field(key, where)
    both = set(fixed) & set(search)
    if both:
        raise DigitsError(f"{where}: {', '.join(sorted(both))} is both fixed and searched; keep it in one table.")
    dimensions = tuple(_dimension(key, value, where) for key, value in search.items())
    pruner = {"kind": space_file.pruner.kind, **space_file.pruner.model_dump(exclude_none=True)}
    space = SearchSpace(name=name, base=space_file.base, fixed=fixed, dimensions=dimensions,
                        description=space_file.description, trial_seconds=space_file.trial_seconds,
                        sampler=space_file.sampler, seed=space_file.seed, pruner=pruner, source=source)
    _check_recipes(space, where)
    return space


def _check_field(key: str, where: str) -> None:
    if key == "validation":
        raise DigitsError(f"{where}: a sweep always validates on the holdout and never on the test set, so remove "
                          "validation from the space.")
    if key in RESERVED_FIELDS:
        raise DigitsError(f"{where}: {key} cannot be set in a space; the base preset names the runs.")
    if key not in RECIPE_FIELDS:
        raise DigitsError(f"{where}: {key!r} is not a Recipe field; use one of "
                          f"{', '.join(name for name in RECIPE_FIELDS if name not in RESERVED_FIELDS)}.")


def _number_type(key: str) -> type | None:
    """int or float for a numeric Recipe field (None allowed or not), else None."""
    members = [member for member in getattr(RECIPE_FIELDS[key].annotation, "__args__",
                                            (RECIPE_FIELDS[key].annotation,)) if member is not type(None)]
    number_types: dict[Any, type] = {int: int, float: float}
    return number_types.get(members[0]) if len(members) == 1 else None


def _dimension(key: str, value: dict, where: str) -> Dimension:
    integer = _number_type(key) is int
    if "choices" in value:
        extra = set(value) - {"choices"}
        if extra:
            raise DigitsError(f"{where}: search.{key} has choices and {', '.join(sorted(extra))}; "
                              "give one or the other.")
        choices: ChoicesTable = _validated(ChoicesTable, value, where, prefix=f"search.{key}.")
        return Dimension(key, choices=tuple(choices.choices), integer=integer)
    if set(value) - {"low", "high", "log", "step"} or "low" not in value or "high" not in value:
        raise DigitsError(f"{where}: search.{key} needs low and high (and optionally log or step), or choices.")
    if _number_type(key) is None:
        raise DigitsError(f"{where}: {key} is not a number, so search.{key} needs choices, not low and high.")
    ends: RangeTable = _validated(RangeTable, value, where, prefix=f"search.{key}.")
    if integer and not (isinstance(ends.low, int) and isinstance(ends.high, int)):
        raise DigitsError(f"{where}: {key} is a whole number, so search.{key} needs whole-number low and high.")
    if integer and ends.step is not None and not isinstance(ends.step, int):
        raise DigitsError(f"{where}: {key} is a whole number, so search.{key}.step must be one too, not {ends.step!r}.")
    return Dimension(key, low=ends.low, high=ends.high, log=ends.log, step=ends.step, integer=integer)


def _check_recipes(space: SearchSpace, where: str) -> None:
    """Build the base recipe and one recipe at each end of each dimension: Recipe's own checks then catch a
    range the training cannot take (a rotation of 90°, smoothing with the MSE loss) before any trial runs."""
    try:
        base = space.base_recipe()
    except DigitsError as error:
        raise DigitsError(f"{where}: the fixed fields do not make a recipe: {error}") from None
    for dimension in space.dimensions:
        values = dimension.choices if dimension.choices is not None else (dimension.low, dimension.high)
        for value in values:
            try:
                with_overrides(base, **{dimension.name: value})
            except DigitsError as error:
                raise DigitsError(f"{where}: search.{dimension.name} = {value!r} "
                                  f"does not make a recipe: {error}") from None
            except TypeError:
                raise DigitsError(f"{where}: search.{dimension.name} = {value!r} "
                                  "is the wrong type for that field.") from None
