"""The `digits` command: parses arguments and calls the library. Nothing else lives here.

Heavy libraries (Keras, TensorFlow) are imported inside the command handlers, so `digits --help`
and `digits data` answer at once.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path

from digits import __version__
from digits.errors import DigitsError


# --- data (issue 2) -------------------------------------------------------------------------------


def add_data_commands(subcommands) -> None:
    data = subcommands.add_parser(
        "data",
        help="load MNIST, verify it and show what it holds",
        description="Load MNIST (vendored copy, --data-dir, cache or mirrors), verify its checksums, "
        "and print shapes, class counts and pixel statistics; write a grid of the first digits.",
    )
    data.add_argument(
        "--data-dir",
        type=Path,
        help="read IDX files (raw or .gz) or a Keras mnist.npz from this directory, e.g. Fashion-MNIST "
        "(default: $DIGITS_DATA_DIR, else the vendored MNIST)",
    )
    data.add_argument("--out", type=Path, default=Path("out"), help="where the sample grid PNG goes (default: out/)")
    data.set_defaults(handler=run_data)


def run_data(args) -> int:
    from digits import data

    mnist = data.load_mnist(args.data_dir)
    print(data.describe(mnist))
    from digits import plots  # matplotlib takes a moment to import; only needed once the data is good.

    grid = plots.sample_grid(mnist.train_images, mnist.train_labels, args.out / "sample_grid.png")
    print(f"\nSample grid of the first 12 training digits: {grid}")
    return 0


# --- serve (issue 8) ------------------------------------------------------------------------------


def add_serve_commands(subcommands) -> None:
    serve = subcommands.add_parser(
        "serve",
        help="a draw-a-digit web page and a REST API",
        description="Load a model once and serve the draw-a-digit page at / and the JSON API "
        "(POST /predict, GET /health, GET /model, schema at /openapi.json) with uvicorn.",
    )
    serve.add_argument("--model", help="a run folder or a .keras file (default: the pretrained model shipped with digits)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on; 0 picks a free one (default: 8000)")
    serve.set_defaults(handler=run_serve)


def run_serve(args) -> int:
    from digits.serve import serve

    serve(args.model, host=args.host, port=args.port)
    return 0


# --- evaluation, comparison and the study (issue 4) -----------------------------------------------


def add_study_commands(subcommands) -> None:
    data_dir_help = "read MNIST from this directory (default: $DIGITS_DATA_DIR, else the vendored copy)"
    evaluate = subcommands.add_parser(
        "evaluate",
        help="metrics, figures and an HTML report for one finished run",
        description="Predict the test set with a run's model and write evaluation.json (accuracy, loss, confusion "
        "matrix, mistakes, per-digit scores, overfitting verdict), figures and report.html into RUN/evaluation/.",
    )
    evaluate.add_argument("run", type=Path, metavar="RUN", help="a run folder written by `digits train`")
    evaluate.add_argument("--data-dir", type=Path, help=data_dir_help)
    evaluate.add_argument("--out", type=Path, help="write here instead of RUN/evaluation/")
    evaluate.set_defaults(handler=run_evaluate)

    compare = subcommands.add_parser(
        "compare",
        help="compare finished runs side by side: table, chart, verdict and report",
        description="Evaluate each run (refreshing its evaluation/ folder), then write a side-by-side table, a chart, "
        "a verdict and one report holding every model into a new folder runs/<time>-comparison/.",
    )
    compare.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="two or more run folders")
    compare.add_argument("--data-dir", type=Path, help=data_dir_help)
    compare.add_argument("--out", type=Path, help="a new (or empty) folder for the comparison")
    compare.set_defaults(handler=run_compare)

    run = subcommands.add_parser(
        "run",
        help="the whole study: train the shallow network and the CNN, evaluate, compare, report",
        description="Train quick-shallow and quick-cnn, each stopping at the end of the first epoch that reaches the "
        "study's test accuracy (90.34 %% and 99.28 %%; under a minute on a 2-core CPU), or with --exact the study's "
        "own recipes seed-shallow-mse and seed-cnn (500 and 15 epochs); evaluate both, compare them, and write one "
        "report into a new folder runs/<time>-study/.",
    )
    run.add_argument("--exact", action="store_true", help="train the study's exact recipes (slow: 500 and 15 epochs)")
    run.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where run folders go (default: runs/)")
    run.add_argument("--data-dir", type=Path, help=data_dir_help)
    run.add_argument("--train-limit", type=int, help="train on only the first N training images (quick tries)")
    run.add_argument("--test-limit", type=int, help="validate and test on only the first N images (quick tries)")
    run.add_argument("--epochs", type=int, help="override both recipes' epochs (quick tries)")
    run.add_argument("--no-target", action="store_true",
                     help="train every epoch of the quick recipes instead of stopping at the study's accuracy")
    run.add_argument("--out", type=Path, help="a new (or empty) folder for the study report instead of runs/<time>-study/")
    run.set_defaults(handler=run_study_command)


def run_evaluate(args) -> int:
    from digits.data import load_mnist
    from digits.runs import load_run
    from digits.study import evaluate_run, summary_table

    run = load_run(args.run)  # A bad folder is reported before MNIST and Keras load.
    evaluated = evaluate_run(run, load_mnist(args.data_dir), args.out)
    print(summary_table([evaluated.summary()]))
    if evaluated.overfitting:
        print(f"\n{evaluated.overfitting.sentence}")
    pairs = ", ".join(f"{pair.actual} read as {pair.predicted} ({pair.count})" for pair in evaluated.evaluation.confused_pairs)
    print(f"Most confused: {pairs or 'none'}.")
    print(f"\nNumbers: {evaluated.out_dir / 'evaluation.json'}\nReport:  {evaluated.report}")
    return 0


def run_compare(args) -> int:
    from digits.data import load_mnist
    from digits.runs import load_run
    from digits.study import compare_runs, summary_table

    if len(args.runs) < 2:
        raise DigitsError("Comparing needs at least two run folders; name two or more after `digits compare`.")
    runs = [load_run(path) for path in args.runs]
    folder, models, comparison = compare_runs(runs, load_mnist(args.data_dir), args.out, command=_command_line())
    print(summary_table(comparison.models))
    print(f"\n{comparison.sentence}\n\nReport: {folder / 'report.html'}")
    return 0


def run_study_command(args) -> int:
    import time

    from digits.data import load_mnist
    from digits.study import check_new_folder, run_study, study_recipes, summary_table

    # Bad limits or a used --out folder are refused at once, not after loading Keras, data and training.
    study_recipes(exact=args.exact, train_limit=args.train_limit, test_limit=args.test_limit, epochs=args.epochs,
                  stop_at_target=not args.no_target)
    if args.out is not None:
        check_new_folder(args.out)
    from digits.train import RunInterrupted

    started = time.perf_counter()
    try:
        result = run_study(
            load_mnist(args.data_dir), args.runs_dir, exact=args.exact, train_limit=args.train_limit,
            test_limit=args.test_limit, epochs=args.epochs, stop_at_target=not args.no_target, out_dir=args.out,
            command=_command_line(),
            verbose=1 if sys.stdout.isatty() else 2, progress=lambda line: print(line, flush=True),
        )
    except RunInterrupted as stopped:
        print(f"digits: the study was interrupted after {stopped.epochs} of {stopped.total_epochs} epochs of "
              f"{stopped.run_dir.name}; that incomplete run is in {stopped.run_dir}, and no study report was written.",
              file=sys.stderr)
        return 130
    print(f"\nThe study, in {time.perf_counter() - started:.0f} s:\n")
    print(summary_table(result.comparison.models))
    print(f"\n{result.comparison.sentence}\n")
    for model in result.models:
        target = model.metrics.get("target_accuracy")
        if target and target["reached"]:
            # Stopping on the test set is legitimate only as this measurement, so it is named as such.
            print(f"{model.name}: time to reach the study's {target['target']:.2%} test accuracy: "
                  f"{target['seconds']:.1f} s of training (epoch {target['epoch']}).")
        elif target:
            print(f"{model.name}: did not reach the study's {target['target']:.2%} test accuracy in "
                  f"{model.metrics.get('epochs')} epochs.")
    for model in result.models:
        if model.overfitting:
            print(f"{model.name}: {model.overfitting.sentence}")
    print("\nRuns:   " + "\n        ".join(model.source for model in result.models))
    print(f"Report: {result.report}")
    return 0


def _command_line() -> str:
    import shlex

    return shlex.join(["digits", *sys.argv[1:]])


# --- models and training (issue 3) ----------------------------------------------------------------


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
    train.add_argument("--runs-dir", type=Path, metavar="DIR", default=Path("runs"),
                       help="where run folders go (default: runs/)")
    train.add_argument("--data-dir", type=Path, metavar="DIR",
                       help="read MNIST from this directory (default: $DIGITS_DATA_DIR, else the vendored copy)")
    train.add_argument("--quiet", action="store_true", help="no per-epoch progress; print only the run folder and result")
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
    parser.add_argument("--momentum", type=float, metavar="X", help="SGD momentum (default: the preset's; the study used none)")
    parser.add_argument("--seed", type=int, metavar="N", help="seed for initialisation, shuffling and dropout (default: 0)")
    parser.add_argument("--validation", metavar="test|holdout",
                        help="'test': the test set, as the study did; 'holdout': the last 10,000 training images")
    parser.add_argument("--train-limit", type=int, metavar="N", help="train on only the first N training images (quick tries)")
    parser.add_argument("--test-limit", type=int, metavar="N", help="validate on only the first N validation images (quick tries)")
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
    parser.add_argument("--weight-averaging", action=argparse.BooleanOptionalAction, default=None,
                        help="save a moving average of the weights (Keras use_ema) instead of the last ones")
    parser.add_argument("--precision", metavar="NAME",
                        help="float32, mixed_bfloat16, or auto (bfloat16 when the CPU has native support)")
    parser.add_argument("--steps-per-execution", type=int, metavar="N",
                        help="batches per compiled call (default: one whole epoch; the math is the same)")
    parser.add_argument("--jit-compile", type=_jit_compile, metavar="auto|true|false",
                        help="XLA compilation (true speeds up the shallow network; false for the CNN on a CPU)")
    parser.add_argument("--target-accuracy", type=_target_accuracy, metavar="X|none",
                        help="stop after the first epoch whose validation accuracy reaches X (a fraction, 0.99 = "
                        "99 %%); none: train every epoch")


def _jit_compile(text: str) -> bool | str:
    values = {"auto": "auto", "true": True, "on": True, "false": False, "off": False}
    if text.lower() not in values:
        raise argparse.ArgumentTypeError(f"use auto, true or false, not {text!r}")
    return values[text.lower()]


def _target_accuracy(text: str) -> float | str:
    if text.lower() == "none":
        return "none"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"use a fraction such as 0.99, or none, not {text!r}")


def recipe_overrides(args) -> dict:
    """Every option named like a Recipe field (--batch-size → batch_size); None where not given."""
    import dataclasses

    from digits.recipes import Recipe

    # PRESET names the starting recipe; it is not an override.
    return {field.name: getattr(args, field.name, None) for field in dataclasses.fields(Recipe) if field.name != "preset"}


def recipe_from_args(args):
    """The preset's recipe with the command line's overrides; `--target-accuracy none` removes its target."""
    import dataclasses

    from digits.recipes import get_preset, with_overrides

    overrides = recipe_overrides(args)
    no_target = overrides.get("target_accuracy") == "none"
    if no_target:
        overrides["target_accuracy"] = None
    recipe = with_overrides(get_preset(args.preset), **overrides)
    return dataclasses.replace(recipe, target_accuracy=None) if no_target else recipe


def run_models(args) -> int:
    from digits.models import DESCRIPTIONS, MODELS, build_model

    if args.name:
        build_model(args.name).summary()
        return 0
    for name in MODELS:
        print(f"{name:<10} {build_model(name).count_params():>7,} parameters   {DESCRIPTIONS.get(name, '')}")
    return 0


def run_presets(args) -> int:
    from digits.recipes import PRESETS

    for preset in PRESETS.values():
        result = f"study: {preset.study_result}" if preset.study_result else "not in the study"
        print(f"{preset.name:<21} {preset.description} [{result}]")
    return 0


def run_train(args) -> int:
    # The recipe is checked before MNIST and Keras load, so a typo costs no waiting.
    recipe = recipe_from_args(args)
    from digits.data import load_mnist

    data = load_mnist(args.data_dir)
    from digits.runs import load_run
    from digits.train import RunInterrupted, train

    verbose = 0 if args.quiet else 1 if sys.stdout.isatty() else 2  # a progress bar only on a terminal
    try:
        run_dir = train(recipe, data, args.runs_dir, verbose=verbose)
    except RunInterrupted as stopped:
        model = (f"model.keras holds epoch {stopped.model_epoch}" if stopped.model_epoch
                 else "no epoch finished, so there is no model.keras")
        print(f"digits: training interrupted after {stopped.epochs} of {stopped.total_epochs} epochs; the incomplete "
              f"run is in {stopped.run_dir} ({model}).", file=sys.stderr)
        return 130
    metrics = load_run(run_dir).metrics
    print(f"Run complete: {run_dir}")
    print(f"validation accuracy {metrics['validation_accuracy']:.2%} ({metrics['validation']}), validation loss "
          f"{metrics['validation_loss']:.4f}, {metrics['epochs']} epochs in {metrics['training_seconds']:.1f} s")
    target = metrics.get("target_accuracy")
    if target and target["reached"]:
        print(f"reached the target {target['target']:.2%} at epoch {target['epoch']}, after {target['seconds']:.1f} s, "
              "and stopped there")
    elif target:
        print(f"did not reach the target {target['target']:.2%} in {metrics['epochs']} epochs")
    return 0


# --- predict (issue 7) ----------------------------------------------------------------------------


def add_predict_commands(subcommands) -> None:
    predict = subcommands.add_parser(
        "predict",
        help="read the digit in your own pictures (PNG, JPEG, BMP, GIF, TIFF, WebP)",
        description="Prepare each picture the way MNIST was prepared (light ink on black, fitted in 20x20, "
        "centred by mass in 28x28) and print the digit, its probability and the likeliest digits. Folders "
        "are walked in sorted order, skipping hidden files. The exit status is 0 only if every file was read.",
    )
    predict.add_argument("inputs", nargs="+", metavar="IMAGE|DIR", help="picture files or folders of them")
    predict.add_argument(
        "--model", metavar="RUN|FILE.keras", help="a run folder or .keras file (default: the shipped model)"
    )
    predict.add_argument("--json", action="store_true", help="print one JSON document, not one line per file")
    predict.add_argument(
        "--show", type=Path, metavar="DIR", help="write each picture beside the 28x28 view the model saw"
    )
    predict.add_argument("--top", type=int, default=3, metavar="K", help="how many likeliest digits to list (3)")
    predict.set_defaults(handler=run_predict)


def run_predict(args) -> int:
    import json

    from digits import predict

    if not 1 <= args.top <= 10:
        raise DigitsError(f"--top must be between 1 and 10, not {args.top}.")
    paths = predict.find_image_files(args.inputs)
    if not paths:
        raise DigitsError(f"No files found in {', '.join(args.inputs)}; give pictures or folders holding some.")
    classifier = predict.load_classifier(args.model)
    results = predict.predict_files(classifier, paths, keep_originals=args.show is not None)
    if args.show is not None:
        predict.save_views(results, args.show)
    if args.json:
        print(json.dumps(predict.results_document(classifier, results, args.top), indent=2))
    else:
        for result in results:
            print(predict.result_line(result, args.top))
    failed = sum(result.error is not None for result in results)
    if failed:
        print(f"digits: {failed} of {len(results)} files could not be read.", file=sys.stderr)
    return 1 if failed else 0


# --- ensembles (issue 6) --------------------------------------------------------------------------


def add_ensemble_commands(subcommands) -> None:
    ensemble = subcommands.add_parser(
        "ensemble",
        help="average several runs' predictions and evaluate the result like one model",
        description="Predict the test set with each run's model, average the probabilities, and write "
        "evaluation.json, figures and report.html for the ensemble (plus ensemble.json with each member's "
        "accuracy) into a new folder runs/<time>-ensemble/.",
    )
    ensemble.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="two or more finished run folders")
    ensemble.add_argument("--tta", action="store_true",
                          help="test-time augmentation: also average each member over 1-pixel shifts of the images")
    ensemble.add_argument("--data-dir", type=Path,
                          help="read MNIST from this directory (default: $DIGITS_DATA_DIR, else the vendored copy)")
    ensemble.add_argument("--out", type=Path, help="a new (or empty) folder for the ensemble's evaluation")
    ensemble.set_defaults(handler=run_ensemble)


def run_ensemble(args) -> int:
    from digits.ensemble import load_members

    load_members(args.runs)  # Bad folders are reported before MNIST and Keras load.
    if args.out is not None:
        from digits.study import check_new_folder

        check_new_folder(args.out)
    from digits.data import load_mnist
    from digits.ensemble import evaluate_ensemble
    from digits.study import summary_table

    result = evaluate_ensemble(args.runs, load_mnist(args.data_dir), args.out, tta=args.tta, command=_command_line())
    print(summary_table([result.ensemble.summary(), *result.members]))
    print(f"\nNumbers: {result.folder / 'evaluation.json'}\nReport:  {result.ensemble.report}")
    return 0


# --- entry point ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="digits",
        description="Train, understand, compare and use MNIST handwritten-digit classifiers.",
    )
    parser.add_argument("--version", action="version", version=f"digits {__version__}")
    subcommands = parser.add_subparsers(title="commands", metavar="COMMAND")
    # In the order a newcomer meets them: the data, training, evaluation, then using a model.
    add_data_commands(subcommands)
    add_training_commands(subcommands)
    add_study_commands(subcommands)
    add_ensemble_commands(subcommands)
    add_predict_commands(subcommands)
    add_serve_commands(subcommands)
    return parser


@contextlib.contextmanager
def native_stderr_to_log():
    """Send native (C++) stderr to a log file while a command runs, keeping Python's stderr on screen.

    TensorFlow writes start-up lines through absl before its logging is initialised, and those ignore
    TF_CPP_MIN_LOG_LEVEL; a user should see our one-sentence errors, not that noise. Set
    DIGITS_NATIVE_STDERR=1 to see it. Only done when stderr is the real terminal stream (not under
    pytest's capture).
    """
    if os.environ.get("DIGITS_NATIVE_STDERR") or sys.stderr is not sys.__stderr__:
        yield
        return
    try:
        sys.stderr.flush()
        terminal_fd = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    log_path = Path(tempfile.gettempdir()) / f"digits-native-stderr-{os.getuid()}.log"
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    python_stderr = sys.stderr
    sys.stderr = open(os.dup(terminal_fd), "w", buffering=1, encoding=python_stderr.encoding, errors="backslashreplace")
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stderr.close()
        sys.stderr = python_stderr
        os.dup2(terminal_fd, 2)
        os.close(terminal_fd)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    with native_stderr_to_log():
        try:
            return args.handler(args) or 0
        except DigitsError as error:
            print(f"digits: error: {error}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("digits: interrupted.", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
