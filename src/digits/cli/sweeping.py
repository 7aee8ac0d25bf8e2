"""`digits sweep`: search a space of recipes on the holdout (Optuna), report on a study, train its best recipe.

One command, three forms, so that the words read as the user thinks of them:
    digits sweep SPACE --trials N [--workers K] [--storage URL] [--study NAME]
    digits sweep report STUDY [--storage URL] [--out FILE]
    digits sweep best STUDY [--top K] [--train-final [--seeds S]]
Optuna and Keras are imported inside the handlers, so `digits --help` does not load them.
"""

from __future__ import annotations

import sys
from pathlib import Path

from digits.cli.options import add_data_dir_option, add_runs_dir_option, check_range
from digits.errors import DigitsError

FORMS = ("report", "best")


def add_sweep_commands(subcommands) -> None:
    sweep = subcommands.add_parser(
        "sweep",
        help="search a space of recipes on the holdout with Optuna; report on it; train its best recipe",
        usage="digits sweep SPACE --trials N [--workers K] [--storage URL] [--study NAME]\n"
              "       digits sweep report STUDY [--storage URL] [--out FILE]\n"
              "       digits sweep best STUDY [--top K] [--train-final [--seeds S]]",
        description="Run trials of a search space (a TOML file, or a shipped space: quick-cnn, shallow), each "
        "training one recipe into its own run folder RUNS_DIR/sweeps/STUDY/trial-NNNN/ and scoring it on the "
        "holdout (never the test set), until the study holds N complete trials; hopeless trials are pruned after "
        "an epoch. Several workers, here (--workers) or on other machines (the same command and --storage), share "
        "one study. Ctrl-C leaves the study consistent: run the same command again to continue.",
    )
    sweep.add_argument("space", metavar="SPACE|report|best", help="a space file or shipped space name; or report, "
                       "or best, followed by STUDY")
    sweep.add_argument("study_name", nargs="?", metavar="STUDY", help="the study (after report or best)")
    sweep.add_argument("--trials", type=int, metavar="N", help="complete trials the study should hold")
    sweep.add_argument("--workers", type=int, default=1, metavar="K",
                       help="worker processes on this machine (default 1)")
    sweep.add_argument("--storage", metavar="URL",
                       help="an SQLAlchemy URL (postgresql://user@host/db, sqlite:///file.db) or journal:PATH "
                       "(default: sqlite:///RUNS_DIR/sweeps/sweeps.db)")
    sweep.add_argument("--heartbeat-seconds", type=int, default=10, metavar="S",
                       help="a running trial writes a heartbeat every S seconds; one silent for 3 × S is taken for "
                       "a dead worker's, failed and run again (default 10; databases only, not journal files)")
    sweep.add_argument("--study", metavar="NAME", help="the study's name (default: the space's name)")
    sweep.add_argument("--out", type=Path, metavar="FILE",
                       help="report: where the HTML page goes (default: RUNS_DIR/sweeps/STUDY/report.html)")
    sweep.add_argument("--top", type=int, default=5, metavar="K", help="best: how many trials to list (default 5)")
    sweep.add_argument("--train-final", action="store_true",
                       help="best: retrain the best recipe on all 60,000 training images (validation none) and "
                       "evaluate it on the test set once")
    sweep.add_argument("--seeds", type=int, default=1, metavar="S", help="best --train-final: seeds 0..S-1 (default 1)")
    add_runs_dir_option(sweep)
    add_data_dir_option(sweep)
    sweep.set_defaults(handler=run_sweep_command)


def run_sweep_command(args) -> int:
    import importlib.util

    if importlib.util.find_spec("optuna") is None:
        raise DigitsError("`digits sweep` needs Optuna, which is not installed; pip install 'digits[sweep]'.")
    if args.space in FORMS:
        if not args.study_name:
            raise DigitsError(f"`digits sweep {args.space}` needs the study's name: digits sweep {args.space} STUDY.")
        _refuse(args, ["trials", "workers", "study", "heartbeat_seconds"], f"digits sweep {args.space}")
        if args.space == "report":
            _refuse(args, ["top", "train_final", "seeds"], "digits sweep report")
            return run_report(args)
        _refuse(args, ["out"], "digits sweep best")
        return run_best(args)
    if args.study_name:
        raise DigitsError(f"`digits sweep SPACE` takes one space, not also {args.study_name!r}; name the study "
                          "with --study.")
    _refuse(args, ["out", "top", "train_final", "seeds"], "digits sweep SPACE")
    if args.trials is None:
        raise DigitsError("Say how many complete trials the sweep should reach: digits sweep SPACE --trials N.")
    return run_sweep(args)


def _refuse(args, names: list[str], form: str) -> None:
    defaults = {"workers": 1, "top": 5, "seeds": 1, "train_final": False, "heartbeat_seconds": 10}
    for name in names:
        if getattr(args, name) not in (None, defaults.get(name)):
            raise DigitsError(f"--{name.replace('_', '-')} does not apply to `{form}`; drop it.")


def run_sweep(args) -> int:
    from digits.sweeps.run import MAX_HEARTBEAT_SECONDS, MAX_TRIALS, MAX_WORKERS
    from digits.sweeps.space import load_space

    space = load_space(args.space)  # A bad space file is one sentence before Optuna and Keras load.
    check_range("--trials", args.trials, 1, MAX_TRIALS)
    check_range("--workers", args.workers, 1, MAX_WORKERS)
    check_range("--heartbeat-seconds", args.heartbeat_seconds, 1, MAX_HEARTBEAT_SECONDS)
    from digits.sweeps.run import SweepJob, default_storage, load_study, shown_url, trial_counts
    from digits.sweeps.run import run_sweep as sweep

    storage = args.storage or default_storage(args.runs_dir)
    study_name = args.study or space.name
    job = SweepJob(space=space, storage_url=storage, study_name=study_name, trials=args.trials,
                   runs_dir=args.runs_dir.resolve(), data_dir=args.data_dir, heartbeat_seconds=args.heartbeat_seconds)
    print(f"Sweep {study_name!r} ({space.source}) in {shown_url(storage)}: until {args.trials} trials are complete, "
          f"{args.workers} worker(s) here. Trial folders: {args.runs_dir / 'sweeps' / study_name}/", flush=True)
    try:
        counts = sweep(job, workers=args.workers, progress=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        counts = trial_counts(load_study(storage, study_name))
        print(f"digits: sweep interrupted with {counts.get('COMPLETE', 0)} of {args.trials} trials complete; the "
              "study is consistent, so run the same command again to continue.", file=sys.stderr)
        return 130
    print("\n" + _counts_sentence(counts, args.trials))
    _print_best(load_study(storage, study_name), 3)
    where = (f" --storage {shown_url(storage)}" if args.storage
             else f" --runs-dir {args.runs_dir}" if args.runs_dir != Path("runs") else "")
    print(f"\nReport: digits sweep report {study_name}{where}")
    return 0


def _counts_sentence(counts: dict[str, int], asked: int | None = None) -> str:
    complete = counts.get("COMPLETE", 0)
    words = [f"{complete} complete" + (f" (of {asked} asked)" if asked else "")]
    words += [f"{counts[state]} {state.lower()}"
              for state in ("PRUNED", "FAIL", "RUNNING", "WAITING") if counts.get(state)]
    return "Trials: " + ", ".join(words) + "."


def _print_best(study, top: int) -> None:
    from digits.sweeps.best import best_trials

    print("Best trials (holdout accuracy):")
    for trial in best_trials(study, top, distinct=False):
        params = ", ".join(f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}"
                           for name, value in trial.params.items())
        print(f"  #{trial.number:<4} {trial.value:.2%}  {params}\n        {trial.user_attrs.get('run_dir', '—')}")


def _storage(args) -> str:
    from digits.sweeps.run import default_storage

    return args.storage or default_storage(args.runs_dir, create=False)


def run_report(args) -> int:
    from digits.sweeps.report import write_sweep_report
    from digits.sweeps.run import SWEEPS_DIR, load_study, shown_url

    study = load_study(_storage(args), args.study_name)
    out = args.out or args.runs_dir / SWEEPS_DIR / args.study_name / "report.html"
    # The command goes into a page people share: no database password in it.
    command = "digits " + " ".join(shown_url(argument) for argument in sys.argv[1:])
    path = write_sweep_report(study, out, command=command)
    print(f"Report: {path}")
    return 0


def run_best(args) -> int:
    from digits.sweeps.best import MAX_SEEDS
    from digits.sweeps.run import MAX_TRIALS, load_study, trial_counts

    check_range("--top", args.top, 1, MAX_TRIALS)
    check_range("--seeds", args.seeds, 1, MAX_SEEDS)
    study = load_study(_storage(args), args.study_name)
    print(_counts_sentence(trial_counts(study)))
    _print_best(study, args.top)
    if not args.train_final:
        return 0
    from digits.data.mnist import load_mnist
    from digits.evaluation.conclusions import summary_table
    from digits.sweeps.best import train_final

    evaluated = train_final(study, load_mnist(args.data_dir), args.runs_dir, seeds=args.seeds,
                            progress=lambda line: print(line, flush=True))
    print("\nThe best recipe trained on all training images, each evaluated on the test set once:\n")
    print(summary_table([model.summary() for model in evaluated]))
    for model in evaluated:
        print(f"{model.source}: test accuracy {model.accuracy:.2%}; report {model.report}")
    return 0
