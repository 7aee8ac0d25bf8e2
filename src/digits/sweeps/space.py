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

import dataclasses
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from digits.errors import DigitsError
from digits.training.recipes import PRESETS, Recipe, get_preset, with_overrides

SWEEPS_DIR = "sweeps"  # under the runs folder: the default SQLite file and each study's trial folders
# What every trial validates on; "test" would choose recipes on the test set, "none" would score nothing.
SWEEP_VALIDATION = "holdout"
PRUNERS = ("median", "successive-halving", "none")
SAMPLERS = ("tpe", "random")
# Fields a space may not set: the validation is the sweep's (see above), the preset names the base.
RESERVED_FIELDS = ("validation", "preset")
RECIPE_FIELDS = {recipe_field.name: recipe_field for recipe_field in dataclasses.fields(Recipe)}
TOP_LEVEL_KEYS = {"description", "base", "trial_seconds", "sampler", "seed", "fixed", "search", "pruner"}


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
        recipe = dataclasses.replace(get_preset(self.base), target_accuracy=None, validation=SWEEP_VALIDATION)
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
    if not path.is_file():
        if str(path_or_name) in shipped:
            path = shipped[str(path_or_name)]
        else:
            raise DigitsError(f"There is no space file {path_or_name}; give a TOML file or a shipped space "
                              f"({', '.join(sorted(shipped))}).")
    try:
        content = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise DigitsError(f"Cannot read the space file {path} ({error}); check the path.") from None
    except tomllib.TOMLDecodeError as error:
        raise DigitsError(f"The space file {path} is not valid TOML ({error}); fix that line.") from None
    return parse_space(content, name=path.stem, source=str(path))


def parse_space(content: dict, *, name: str, source: str = "") -> SearchSpace:
    """Check a space file's content (a dict as tomllib reads it) and build the SearchSpace."""
    where = source or name
    unknown = set(content) - TOP_LEVEL_KEYS
    if unknown:
        raise DigitsError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; a space file holds "
                          f"{', '.join(sorted(TOP_LEVEL_KEYS))}.")
    base = content.get("base")
    if base not in PRESETS:
        raise DigitsError(f"{where}: base must name a preset ({', '.join(PRESETS)}), not {base!r}.")
    fixed = _table(content, "fixed", where)
    search = _table(content, "search", where)
    if not search:
        raise DigitsError(f"{where}: a sweep needs at least one [search.FIELD] table saying what to vary.")
    for key in [*fixed, *search]:
        _check_field(key, where)
    both = set(fixed) & set(search)
    if both:
        raise DigitsError(f"{where}: {', '.join(sorted(both))} is both fixed and searched; keep it in one table.")
    dimensions = tuple(_dimension(key, value, where) for key, value in search.items())
    trial_seconds = content.get("trial_seconds")
    if trial_seconds is not None and (isinstance(trial_seconds, bool) or not isinstance(trial_seconds, (int, float))
                                      or trial_seconds <= 0):
        raise DigitsError(f"{where}: trial_seconds must be a positive number of seconds, not {trial_seconds!r}.")
    sampler = content.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        raise DigitsError(f"{where}: sampler must be one of {', '.join(SAMPLERS)}, not {sampler!r}.")
    seed = content.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        raise DigitsError(f"{where}: seed must be a whole number, 0 or more, not {seed!r}.")
    pruner = {"kind": "median", **_table(content, "pruner", where)}
    _check_pruner(pruner, where)
    space = SearchSpace(name=name, base=base, fixed=fixed, dimensions=dimensions,
                        description=str(content.get("description", "")), trial_seconds=trial_seconds,
                        sampler=sampler, seed=seed, pruner=pruner, source=source)
    _check_recipes(space, where)
    return space


def _table(content: dict, key: str, where: str) -> dict:
    value = content.get(key, {})
    if not isinstance(value, dict):
        raise DigitsError(f"{where}: {key} must be a table ([{key}]), not {type(value).__name__}.")
    return value


def _check_field(key: str, where: str) -> None:
    if key == "validation":
        raise DigitsError(f"{where}: a sweep always validates on the holdout and never on the test set, so remove "
                          "validation from the space.")
    if key in RESERVED_FIELDS:
        raise DigitsError(f"{where}: {key} cannot be set in a space; the base preset names the runs.")
    if key not in RECIPE_FIELDS:
        raise DigitsError(f"{where}: {key!r} is not a Recipe field; use one of "
                          f"{', '.join(name for name in RECIPE_FIELDS if name not in RESERVED_FIELDS)}.")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _dimension(key: str, value, where: str) -> Dimension:
    if not isinstance(value, dict):
        raise DigitsError(f"{where}: search.{key} must be a table with low and high, or with choices.")
    integer = RECIPE_FIELDS[key].type in ("int", "int | None")
    if "choices" in value:
        extra = set(value) - {"choices"}
        choices = value["choices"]
        if extra:
            raise DigitsError(f"{where}: search.{key} has choices and {', '.join(sorted(extra))}; "
                              "give one or the other.")
        if not isinstance(choices, list) or not choices:
            raise DigitsError(f"{where}: search.{key}.choices must be a non-empty list.")
        if any(not isinstance(choice, (str, int, float, bool)) for choice in choices):
            raise DigitsError(f"{where}: search.{key}.choices may hold only strings, numbers and booleans.")
        if len(set(map(repr, choices))) < len(choices):
            raise DigitsError(f"{where}: search.{key}.choices lists a value twice; list each once.")
        return Dimension(key, choices=tuple(choices), integer=integer)
    extra = set(value) - {"low", "high", "log", "step"}
    if extra or "low" not in value or "high" not in value:
        raise DigitsError(f"{where}: search.{key} needs low and high (and optionally log or step), or choices.")
    low, high, log, step = value["low"], value["high"], value.get("log", False), value.get("step")
    if RECIPE_FIELDS[key].type not in ("int", "int | None", "float", "float | None"):
        raise DigitsError(f"{where}: {key} is not a number, so search.{key} needs choices, not low and high.")
    if not (_is_number(low) and _is_number(high)) or not low < high:
        raise DigitsError(f"{where}: search.{key} needs numbers with low below high, not low={low!r}, high={high!r}.")
    if integer and not (isinstance(low, int) and isinstance(high, int)):
        raise DigitsError(f"{where}: {key} is a whole number, so search.{key} needs whole-number low and high.")
    if not isinstance(log, bool):
        raise DigitsError(f"{where}: search.{key}.log must be true or false, not {log!r}.")
    if log and low <= 0:
        raise DigitsError(f"{where}: search.{key} is log-uniform, so low must be above 0, not {low!r}.")
    if step is not None and (not _is_number(step) or step <= 0 or log):
        raise DigitsError(f"{where}: search.{key}.step must be a positive number, and cannot go with log = true.")
    if integer and step is not None and not isinstance(step, int):
        raise DigitsError(f"{where}: {key} is a whole number, so search.{key}.step must be one too, not {step!r}.")
    return Dimension(key, low=low, high=high, log=log, step=step, integer=integer)


def _check_pruner(pruner: dict, where: str) -> None:
    if pruner["kind"] not in PRUNERS:
        raise DigitsError(f"{where}: pruner.kind must be one of {', '.join(PRUNERS)}, not {pruner['kind']!r}.")
    unknown = set(pruner) - {"kind", "startup_trials", "warmup_epochs"}
    if unknown:
        raise DigitsError(f"{where}: unknown pruner setting(s) {', '.join(sorted(unknown))}; use startup_trials "
                          "or warmup_epochs.")
    for key in ("startup_trials", "warmup_epochs"):
        value = pruner.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise DigitsError(f"{where}: pruner.{key} must be a whole number, 0 or more, not {value!r}.")


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
