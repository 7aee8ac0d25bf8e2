"""Commands that judge trained models: `evaluate`, `compare`, `run` (the whole study), `ensemble`."""

from __future__ import annotations

import sys
from pathlib import Path

from digits.cli.options import add_data_dir_option, add_runs_dir_option
from digits.errors import DigitsError


# --- evaluation, comparison and the study (issue 4) -----------------------------------------------


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
                          "calibration before and after")
    evaluate.set_defaults(handler=run_evaluate)

    compare = subcommands.add_parser(
        "compare",
        help="compare finished runs side by side: table, chart, verdict and report",
        description="Evaluate each run (refreshing its evaluation/ folder), then write a side-by-side table, a chart, "
        "a verdict and one report holding every model into a new folder runs/<time>-comparison/.",
    )
    compare.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="two or more run folders")
    add_data_dir_option(compare)
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
    add_runs_dir_option(run)
    add_data_dir_option(run)
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
    evaluated = evaluate_run(run, load_mnist(args.data_dir), args.out, tta=args.tta, calibrate=args.calibrate)
    print(summary_table([evaluated.summary()]))
    print(f"\n{evaluated.calibration_line()}")
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
    add_data_dir_option(ensemble)
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
