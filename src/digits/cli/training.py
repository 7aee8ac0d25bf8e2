"""Commands that look at the data and build models: `data`, `models`, `presets`, `train`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from digits.cli.options import add_data_dir_option, add_runs_dir_option

# --- data ---------------------------------------------------------------------------------------------


def add_data_commands(subcommands) -> None:
    data = subcommands.add_parser(
        "data",
        help="load MNIST, verify it and show what it holds",
        description="Load MNIST (vendored copy, --data-dir, cache or mirrors), verify its checksums, "
        "and print shapes, class counts and pixel statistics; write a grid of the first digits.",
    )
    add_data_dir_option(data)
    data.add_argument("--out", type=Path, default=Path("out"), help="where the sample grid PNG goes (default: out/)")
    data.set_defaults(handler=run_data)


def run_data(args) -> int:
    from digits.api import load_mnist
    from digits.data.statistics import describe

    mnist = load_mnist(args.data_dir)
    print(describe(mnist))
    from digits.reporting import plots  # matplotlib takes a moment to import; only needed once the data is good.

    grid = args.out / "sample_grid.png"
    plots.sample_grid(mnist.train_images, mnist.train_labels, grid)
    print(f"\nSample grid of the first 12 training digits: {grid}")
    return 0


# --- models and training ------------------------------------------------------------------------------


def add_training_commands(subcommands) -> None:
    models = subcommands.add_parser(
        "models",
        help="list the model architectures, or show one's Keras summary",
        description="Without NAME, list the architectures with their parameter counts; with NAME, print its "
        "Keras summary.",
    )
    models.add_argument("name", nargs="?", metavar="NAME", help="an architecture, e.g. shallow or cnn")
    models.set_defaults(handler=run_models)

    presets = subcommands.add_parser(
        "presets",
        help="list the training presets and the study's result for each",
        description="List the named recipes `digits train` accepts: the study's own (seed-*, the study's math, "
        "run faster) and fast ones (quick-*, each saying what differs from the study).",
    )
    presets.set_defaults(handler=run_presets)

    train = subcommands.add_parser(
        "train",
        help="train a preset and keep the run in its own folder",
        description="Train PRESET (see `digits presets`), showing Keras's per-epoch progress, and write a new run "
        "folder RUNS_DIR/<time>-<preset>/ with config.json, history.csv, metrics.json and model.keras. Ctrl-C "
        "stops cleanly: the folder keeps the finished epochs and is marked interrupted.",
    )
    train.add_argument("preset", metavar="PRESET", help="a preset name, e.g. seed-cnn or quick-shallow")
    add_recipe_options(train)
    add_runs_dir_option(train)
    add_data_dir_option(train)
    train.add_argument("--quiet", action="store_true",
                       help="no per-epoch progress; print only the run folder and result")
    train.add_argument("--tensorboard", action="store_true",
                       help="also write TensorBoard logs (per epoch) into RUN/tensorboard/; open them with "
                       "`tensorboard --logdir RUN/tensorboard`")
    train.set_defaults(handler=run_train)


def add_recipe_options(parser) -> None:
    """One flag per Recipe field (--batch-size sets batch_size), generated from the field's declaration: its type,
    its choices or range, and its description as the help. Each overrides the preset's value; `recipe_overrides(args)`
    collects them."""
    from digits.training.recipes import Recipe

    group = parser.add_argument_group("recipe settings", "each replaces the preset's value (`digits presets`)")
    for name, info in Recipe.model_fields.items():
        if name == "preset":  # PRESET, the positional argument, names the starting recipe.
            continue
        flag, help_text = "--" + name.replace("_", "-"), recipe_flag_help(info)
        value_type = _value_type(info.annotation)
        if value_type is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            group.add_argument(flag, type=FLAG_TYPES.get(name, value_type), metavar=_metavar(name, info, value_type),
                               help=help_text)


# Flags whose words are not simply the field's type: XLA's auto|true|false, and `none` to remove a target.
FLAG_METAVARS = {"jit_compile": "auto|true|false", "target_accuracy": "X|none"}


def recipe_flag_help(info) -> str:
    """A flag's help: the field's description, then what it takes (its choices or range); the preset gives the
    default."""
    from digits.training.declared import Choices, bounds_in_words

    choices = next((item for item in info.metadata if isinstance(item, Choices)), None)
    takes = f"one of {choices.words}" if choices else bounds_in_words(info) if info.metadata else ""
    # argparse formats help with %, so a percent sign in a description is written twice.
    return f"{info.description} [{takes + '; ' if takes else ''}default: the preset's]".replace("%", "%%")


def _value_type(annotation) -> type:
    """int, float, bool or str: the type a flag's word becomes (None, for "not set", is the absent flag)."""
    members = [member for member in getattr(annotation, "__args__", (annotation,)) if member is not type(None)]
    return members[0] if len(members) == 1 and members[0] in (int, float, bool) else str


def _metavar(name: str, info, value_type: type) -> str:
    from digits.training.declared import Choices, unit_of

    if name in FLAG_METAVARS:
        return FLAG_METAVARS[name]
    choices = next((item for item in info.metadata if isinstance(item, Choices)), None)
    if choices:
        words = "|".join(map(str, choices.values))
        return words if len(words) <= 24 else "NAME"
    unit = unit_of(info)
    if unit and unit.isalpha():
        return unit.upper()
    return "N" if value_type is int else "X"


def _jit_compile(text: str) -> bool | str:
    values: dict[str, bool | str] = {"auto": "auto", "true": True, "on": True, "false": False, "off": False}
    if text.lower() not in values:
        raise argparse.ArgumentTypeError(f"use auto, true or false, not {text!r}")
    return values[text.lower()]


def _target_accuracy(text: str) -> float | str:
    if text.lower() == "none":
        return "none"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"use a fraction such as 0.99, or none, not {text!r}") from None


FLAG_TYPES = {"jit_compile": _jit_compile, "target_accuracy": _target_accuracy}


def recipe_overrides(args) -> dict:
    """Every option named like a Recipe field (--batch-size → batch_size); None where not given."""
    from digits.training.recipes import Recipe

    # PRESET names the starting recipe; it is not an override.
    return {name: getattr(args, name, None) for name in Recipe.model_fields if name != "preset"}


def recipe_from_args(args):
    """The preset's recipe with the command line's overrides; `--target-accuracy none` removes its target."""
    from digits.api import get_preset

    overrides = recipe_overrides(args)
    if overrides.get("target_accuracy") is None:
        del overrides["target_accuracy"]  # Not given: keep the preset's target.
    elif overrides["target_accuracy"] == "none":
        overrides["target_accuracy"] = None  # `--target-accuracy none`: remove it.
    return get_preset(args.preset, **overrides)


def run_models(args) -> int:
    from digits.api import build_model
    from digits.training.models import DESCRIPTIONS, MODELS

    if args.name:
        build_model(args.name).summary()
        return 0
    for name in MODELS:
        print(f"{name:<12} {build_model(name).count_params():>7,} parameters   {DESCRIPTIONS.get(name, '')}")
    return 0


def run_presets(args) -> int:
    from digits.api import presets

    for preset in presets().values():
        result = (f"study: {preset.study_result}" if preset.study_result
                  else f"retells {preset.study_recipe}" if preset.study_recipe else "not in the study")
        print(f"{preset.name:<21} {preset.description} [{result}]")
    return 0


def run_train(args) -> int:
    # The recipe is checked before MNIST and Keras load, so a typo costs no waiting.
    recipe = recipe_from_args(args)
    from digits.api import load_mnist, train
    from digits.training.fit import RunInterrupted

    # train checks --runs-dir first (a read-only or full folder), before compiling the model.
    data = load_mnist(args.data_dir)
    verbose: int | str = 0 if args.quiet else 1 if sys.stdout.isatty() else "epochs"  # a bar only on a terminal
    try:
        run = train(recipe, data, args.runs_dir, verbose=verbose, tensorboard=args.tensorboard)
    except RunInterrupted as stopped:
        model = (f"model.keras holds epoch {stopped.model_epoch}" if stopped.model_epoch
                 else "no epoch finished, so there is no model.keras")
        print(f"digits: training interrupted after {stopped.epochs} of {stopped.total_epochs} epochs; the incomplete "
              f"run is in {stopped.run_dir} ({model}).", file=sys.stderr)
        return 130
    run_dir, metrics = run.folder, run.metrics
    print(f"Run complete: {run_dir}")
    if metrics["validation_accuracy"] is None:
        epochs = f"{metrics['epochs']} epoch{'s' * (metrics['epochs'] != 1)}"
        print(f"no validation (--validation none): {epochs} in {metrics['training_seconds']:.1f} s; "
              f"`digits evaluate {run_dir}` scores the model on the test set")
    else:
        print(f"validation accuracy {metrics['validation_accuracy']:.2%} ({metrics['validation']}), validation loss "
              f"{metrics['validation_loss']:.4f}, {metrics['epochs']} epochs in {metrics['training_seconds']:.1f} s")
    target = metrics.get("target_accuracy")
    if target and target["reached"]:
        print(f"reached the target {target['target']:.2%} at epoch {target['epoch']}, after {target['seconds']:.1f} s, "
              "and stopped there")
    elif target:
        print(f"did not reach the target {target['target']:.2%} in {metrics['epochs']} epochs")
    if args.tensorboard:
        print(f"TensorBoard logs: tensorboard --logdir {run_dir / 'tensorboard'}")
    return 0
