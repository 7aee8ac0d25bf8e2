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
    """Options that override a preset's recipe; `recipe_overrides(args)` collects them."""
    parser.add_argument("--epochs", type=int, metavar="N", help="passes over the training images")
    parser.add_argument("--batch-size", type=int, metavar="N", help="images per gradient step")
    parser.add_argument("--learning-rate", type=float, metavar="X",
                        help="optimizer step size (default: the preset's, or a new optimizer's Keras default)")
    parser.add_argument("--loss", metavar="NAME", help="categorical_crossentropy, mse or poisson")
    parser.add_argument("--optimizer", metavar="NAME",
                        help="sgd, adam, adadelta or rmsprop (Keras defaults for its other settings)")
    parser.add_argument("--momentum", type=float, metavar="X",
                        help="SGD momentum (default: the preset's; the study used none)")
    parser.add_argument("--seed", type=int, metavar="N",
                        help="seed for initialisation, shuffling and dropout (default: 0)")
    parser.add_argument("--validation", metavar="test|holdout|none",
                        help="'test': the test set, as the study did; 'holdout': the last 10,000 training images; "
                        "'none': train on all 60,000 and score nothing per epoch")
    parser.add_argument("--train-limit", type=int, metavar="N",
                        help="train on only the first N training images (quick tries)")
    parser.add_argument("--test-limit", type=int, metavar="N",
                        help="validate on only the first N validation images (quick tries)")
    parser.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=None,
                        help="SGD with Nesterov momentum (or not)")
    parser.add_argument("--schedule", metavar="NAME",
                        help="learning-rate schedule: constant (the study) or one-cycle (linear warm-up over 20 %% of "
                        "the steps to --learning-rate, then linear decay to 0)")
    parser.add_argument("--label-smoothing", type=float, metavar="X", help="cross-entropy label smoothing, e.g. 0.1")
    parser.add_argument("--augment-shift", type=int, metavar="PIXELS",
                        help="random shifts of up to ±PIXELS during training (the cnn models only; 0 = none)")
    parser.add_argument("--augment-rotation", type=float, metavar="DEGREES",
                        help="random rotations of up to ±DEGREES during training (the cnn models only; 0 = none)")
    parser.add_argument("--augment-zoom", type=float, metavar="X",
                        help="random zoom by up to ±X, a fraction, during training (the cnn models only; 0 = none)")
    parser.add_argument("--augment-elastic", type=float, metavar="PIXELS",
                        help="smooth random elastic distortion of about PIXELS during training (the cnn models only; "
                        "0 = none)")
    parser.add_argument("--weight-averaging", action=argparse.BooleanOptionalAction, default=None,
                        help="save a moving average of the weights (Keras use_ema) instead of the last ones")
    parser.add_argument("--precision", metavar="NAME",
                        help="float32, mixed_bfloat16, or auto (bfloat16 where a short measurement on this CPU "
                        "model finds it faster; the choice is kept in the user cache)")
    parser.add_argument("--steps-per-execution", type=int, metavar="N",
                        help="batches per compiled call (default: one whole epoch; the math is the same)")
    parser.add_argument("--jit-compile", type=_jit_compile, metavar="auto|true|false",
                        help="XLA compilation (true speeds up the shallow network; false for the CNN on a CPU)")
    parser.add_argument("--target-accuracy", type=_target_accuracy, metavar="X|none",
                        help="stop after the first epoch whose validation accuracy reaches X (a fraction, 0.99 = "
                        "99 %%); none: train every epoch")


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


def recipe_overrides(args) -> dict:
    """Every option named like a Recipe field (--batch-size → batch_size); None where not given."""
    import dataclasses

    from digits.training.recipes import Recipe

    # PRESET names the starting recipe; it is not an override.
    return {field.name: getattr(args, field.name, None)
            for field in dataclasses.fields(Recipe) if field.name != "preset"}


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
        print(f"{name:<10} {build_model(name).count_params():>7,} parameters   {DESCRIPTIONS.get(name, '')}")
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
    from digits.training.runs import check_writable

    check_writable(args.runs_dir)  # Likewise a read-only or full --runs-dir, before MNIST loads.
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
