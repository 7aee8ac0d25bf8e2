"""Commands that judge trained models: `evaluate`, `compare`, `run` (the whole study), `ensemble`."""

from __future__ import annotations

import sys
from pathlib import Path

from digits.cli.options import add_data_dir_option, add_runs_dir_option, check_range
from digits.errors import DigitsError

# `digits ensemble --from-sweep STUDY --top K`: each member is a model loaded into memory at once.
MAX_MEMBERS = 100

# --- evaluation, comparison and the study -------------------------------------------------------------


def add_study_commands(subcommands) -> None:
    evaluate = subcommands.add_parser(
        "evaluate",
        help="metrics, figures and an HTML report for one finished run",
        description="Predict the test set with a run's model and write evaluation.json (accuracy, loss, confusion "
        "matrix, mistakes, per-digit scores, overfitting verdict), figures and report.html into RUN/evaluation/.",
    )
    evaluate.add_argument("run", type=Path, metavar="RUN", help="a run folder written by `digits train`")
    add_data_dir_option(evaluate)
    evaluate.add_argument("--out", type=Path, help="write here instead of RUN/evaluation/")
    evaluate.add_argument("--tta", action="store_true",
                          help="test-time augmentation: average each test image's probabilities with those of its "
                          "1-pixel shifts (5 reads per image; written to RUN/evaluation-tta/)")
    evaluate.add_argument("--calibrate", action="store_true",
                          help="fit a temperature on the holdout (the last 10,000 training images, never the test "
                          "set), save it in RUN/calibration.json for predict, serve and export, and report the "
                          "calibration before and after; also fit the run's not-a-digit detector on generated "
                          "letters, scribbles, shapes and noise (RUN/not_a_digit.npz; about a minute)")
    evaluate.set_defaults(handler=run_evaluate)

    compare = subcommands.add_parser(
        "compare",
        help="compare finished runs side by side: table, chart, verdict and report",
        description="Evaluate each run, then write a side-by-side table, a chart, a verdict and one report holding "
        "every model into a new folder runs/<time>-comparison/, with each run's evaluation in a folder of its own "
        "inside it; the run folders are only read.",
    )
    compare.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="two or more run folders")
    add_data_dir_option(compare)
    compare.add_argument("--out", type=Path, help="a new (or empty) folder for the comparison")
    compare.set_defaults(handler=run_compare)

    run = subcommands.add_parser(
        "run",
        help="the whole study: four models (the shallow network's two configurations and at its best, and the "
        "CNN), trained, evaluated, compared, reported",
        description="Train the study's four models with fast settings, each for a fixed number of epochs: the shallow "
        "network under the study's two configurations (quick-shallow-mse: MSE + SGD; quick-shallow-poisson: Poisson "
        "+ Adadelta), at its best (quick-shallow: cross-entropy) and the CNN (quick-cnn); about a minute on a 2-core "
        "CPU. With --exact, the study's own three recipes instead (seed-shallow-mse, seed-shallow-poisson, seed-cnn: "
        "500, 500 and 15 epochs). Then evaluate every model, compare them, set the study's figures beside ours, and "
        "write one report into a new folder runs/<time>-study/.",
    )
    run.add_argument("--exact", action="store_true",
                     help="train the study's exact recipes (slow: 500, 500 and 15 epochs)")
    add_runs_dir_option(run)
    add_data_dir_option(run)
    run.add_argument("--train-limit", type=int, help="train on only the first N training images (quick tries)")
    run.add_argument("--test-limit", type=int, help="validate and test on only the first N images (quick tries)")
    run.add_argument("--epochs", type=int, help="override every recipe's epochs (quick tries)")
    run.add_argument("--out", type=Path,
                     help="a new (or empty) folder for the study report instead of runs/<time>-study/")
    run.set_defaults(handler=run_study_command)


def run_evaluate(args) -> int:
    from digits.api import evaluate, load_mnist
    from digits.evaluation.conclusions import summary_table
    from digits.training.runs import load_run

    load_run(args.run)  # A bad folder is reported before MNIST and Keras load.
    evaluated = evaluate(args.run, load_mnist(args.data_dir), args.out, tta=args.tta, calibrate=args.calibrate)
    print(summary_table([evaluated.summary()]))
    print(f"\n{evaluated.calibration_line()}")
    if evaluated.overfitting:
        print(f"\n{evaluated.overfitting.sentence}")
    pairs = ", ".join(f"{pair.actual} read as {pair.predicted} ({pair.count})"
                      for pair in evaluated.confused_pairs)
    print(f"Most confused: {pairs or 'none'}.")
    print(f"\nNumbers: {evaluated.out_dir / 'evaluation.json'}\nReport:  {evaluated.report}")
    return 0


def run_compare(args) -> int:
    from digits.api import compare, load_mnist
    from digits.evaluation.conclusions import summary_table
    from digits.training.runs import load_run

    if len(args.runs) < 2:
        raise DigitsError("Comparing needs at least two run folders; name two or more after `digits compare`.")
    for path in args.runs:
        load_run(path)  # Bad folders are reported before MNIST and Keras load.
    compared = compare(*args.runs, data=load_mnist(args.data_dir), out_dir=args.out, command=_command_line())
    print(summary_table(compared.comparison.models))
    print(f"\n{compared.comparison.sentence}\n")
    for line in compared.conclusions:
        print(f"{line}\n")
    print(f"Report: {compared.report}")
    return 0


def run_study_command(args) -> int:
    import time

    from digits.api import run_study
    from digits.evaluation.conclusions import summary_table
    from digits.study import load_mnist_while_importing, study_recipes
    from digits.training.runs import check_new_folder

    # Bad limits or a used --out folder are refused at once, not after loading Keras, data and training.
    study_recipes(exact=args.exact, train_limit=args.train_limit, test_limit=args.test_limit, epochs=args.epochs)
    if args.out is not None:
        check_new_folder(args.out)

    started = time.perf_counter()
    data = load_mnist_while_importing(args.data_dir)
    from digits.training.fit import RunInterrupted  # Imported by now, beside the data.

    try:
        result = run_study(
            data, args.runs_dir, exact=args.exact, train_limit=args.train_limit,
            test_limit=args.test_limit, epochs=args.epochs, out_dir=args.out,
            command=_command_line(),
            verbose=1 if sys.stdout.isatty() else "epochs", progress=lambda line: print(line, flush=True),
        )
    except RunInterrupted as stopped:
        print(f"digits: the study was interrupted after {stopped.epochs} of {stopped.total_epochs} epochs of "
              f"{stopped.run_dir.name}; that incomplete run is in {stopped.run_dir}, and no study report was written.",
              file=sys.stderr)
        return 130
    print(f"\nThe study, in {time.perf_counter() - started:.0f} s:\n")
    print(summary_table(result.comparison.models))
    print(f"\n{result.comparison.sentence}\n")
    for line in result.conclusions:
        print(f"{line}\n")
    for model in result.models:
        if model.overfitting:
            print(f"{model.name}: {model.overfitting.sentence}")
    print("\nRuns:   " + "\n        ".join(model.source for model in result.models))
    print(f"Report: {result.report}")
    return 0


def _command_line() -> str:
    import shlex

    return shlex.join(["digits", *sys.argv[1:]])


# --- ensembles ----------------------------------------------------------------------------------------


def add_ensemble_commands(subcommands) -> None:
    ensemble = subcommands.add_parser(
        "ensemble",
        help="average several runs' predictions and evaluate the result like one model",
        description="Predict the test set with each run's model, average the probabilities, and write "
        "evaluation.json, figures and report.html for the ensemble (plus ensemble.json with each member's "
        "accuracy) into a new folder runs/<time>-ensemble/.",
    )
    ensemble.add_argument("runs", type=Path, nargs="*", metavar="RUN", help="two or more finished run folders")
    ensemble.add_argument("--from-sweep", metavar="STUDY",
                          help="instead of RUNs: the run folders of a sweep's best --top different recipes")
    ensemble.add_argument("--top", type=int, default=3, metavar="K", help="with --from-sweep: how many (default 3)")
    ensemble.add_argument("--storage", metavar="URL",
                          help="with --from-sweep: the sweep's storage (default: sqlite:///runs/sweeps/sweeps.db)")
    ensemble.add_argument("--tta", action="store_true",
                          help="test-time augmentation: also average each member over 1-pixel shifts of the images")
    add_data_dir_option(ensemble)
    ensemble.add_argument("--out", type=Path, help="a new (or empty) folder for the ensemble's evaluation")
    ensemble.set_defaults(handler=run_ensemble)


def run_ensemble(args) -> int:
    from digits.ensemble import load_members

    if args.from_sweep:
        if args.runs:
            raise DigitsError("Give either run folders or --from-sweep STUDY, not both.")
        check_range("--top", args.top, 1, MAX_MEMBERS)
        from digits.sweeps.best import member_runs
        from digits.sweeps.run import default_storage, load_study

        storage = args.storage or default_storage(Path("runs"), create=False)
        args.runs = member_runs(load_study(storage, args.from_sweep), args.top)
    load_members(args.runs)  # Bad folders are reported before MNIST and Keras load.
    if args.from_sweep and args.out is None:
        from digits.training.runs import create_run_dir

        # Beside the trial folders (runs/sweeps/STUDY/), not inside the first member's trial folder.
        args.out = create_run_dir(Path(args.runs[0]).parent.parent, "ensemble")
    if args.out is not None:
        from digits.training.runs import check_new_folder

        check_new_folder(args.out)
    from digits.data.mnist import load_mnist
    from digits.ensemble import evaluate_ensemble
    from digits.evaluation.conclusions import summary_table

    result = evaluate_ensemble(args.runs, load_mnist(args.data_dir), args.out, tta=args.tta, command=_command_line())
    print(summary_table([result.ensemble.summary(), *result.members]))
    print(f"\nNumbers: {result.folder / 'evaluation.json'}\nReport:  {result.ensemble.report}")
    return 0
