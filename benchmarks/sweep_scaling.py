"""Sweep scaling: trials per hour with 1 and 2 workers against SQLite and PostgreSQL, and each storage's cost per trial.

    .venv/bin/python benchmarks/sweep_scaling.py                        # SQLite only, a few minutes on 2 cores
    .venv/bin/python benchmarks/sweep_scaling.py --postgres postgresql+psycopg://postgres@/bench?host=/tmp/pg

Tiny trials (the shallow network, 1,000 training images, 2 epochs) make the storage's share visible; real trials
last minutes, so the storage's share shrinks by as much. Two parts:
1. Storage overhead: a trial that trains nothing but does what a sweep trial does to the storage (ask, fail stale
   trials, suggest 2 parameters, report 2 epochs, set 6 attributes, tell), with heartbeats on; milliseconds each.
2. Throughput: `digits.sweeps.run.run_sweep` with 1 and 2 worker processes on this machine, trials per hour, wall
   clock from start to the last trial's end. One worker runs in this process (warmed up first); two workers are
   spawned processes, so their TensorFlow import and data loading are counted, as a user would wait for them.
With K workers on K machines the database sees K / (trial seconds) trials per second, each costing the overhead
from part 1: that is the load to compare with what the database can take.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

SPACE = """
base = "quick-shallow"
[fixed]
epochs = 2
train_limit = 1000
test_limit = 200
[search.learning_rate]
low = 0.001
high = 0.05
log = true
[search.batch_size]
choices = [64, 128, 256]
[pruner]
kind = "none"
"""


def storage_overhead(url: str, trials: int) -> float:
    """Milliseconds of storage work per trial, training nothing."""
    import optuna

    from digits.sweeps.run import create_study, open_storage
    from digits.sweeps.space import parse_space

    space = parse_space(__import__("tomllib").loads(SPACE), name="overhead")
    storage = open_storage(url, heartbeat_seconds=10)
    study = create_study(space, storage, f"overhead-{os.getpid()}-{time.time_ns()}")

    def objective(trial):
        learning_rate = trial.suggest_float("learning_rate", 0.001, 0.05, log=True)
        trial.suggest_categorical("batch_size", [64, 128, 256])
        for name in ("recipe", "host", "pid", "run_dir", "seconds", "epochs"):
            trial.set_user_attr(name, name)
        for epoch in (1, 2):
            trial.report(learning_rate, epoch)
            trial.should_prune()
        return learning_rate

    started = time.perf_counter()
    for _ in range(trials):
        optuna.storages.fail_stale_trials(study)
        study.optimize(objective, n_trials=1)
    return 1000 * (time.perf_counter() - started) / trials


def throughput(url: str, workers: int, trials: int, runs_dir: Path) -> tuple[float, float]:
    """(trials per hour, mean training seconds per trial) of a real sweep of tiny trials."""
    from digits.sweeps.run import SweepJob, load_study, run_sweep
    from digits.sweeps.space import parse_space

    space = parse_space(__import__("tomllib").loads(SPACE), name="scaling")
    name = f"scaling-{workers}-{os.getpid()}-{time.time_ns()}"
    job = SweepJob(space=space, storage_url=url, study_name=name, trials=trials, runs_dir=runs_dir, quiet=True)
    started = time.perf_counter()
    run_sweep(job, workers=workers, progress=lambda line: None)
    wall = time.perf_counter() - started
    complete = [trial for trial in load_study(url, name).trials if trial.value is not None]
    seconds = sum(trial.user_attrs["seconds"] for trial in complete) / len(complete)
    return 3600 * len(complete) / wall, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", default=os.environ.get("DIGITS_TEST_POSTGRES_URL"),
                        help="a PostgreSQL URL to measure too (default: $DIGITS_TEST_POSTGRES_URL)")
    parser.add_argument("--trials", type=int, default=6, help="trials per throughput measurement (default 6)")
    parser.add_argument("--overhead-trials", type=int, default=50, help="empty trials per storage (default 50)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        storages = {"SQLite": f"sqlite:///{Path(folder) / 'bench.db'}"}
        if args.postgres:
            storages["PostgreSQL"] = args.postgres
        print(f"Storage overhead per trial (nothing trained; {args.overhead_trials} trials, heartbeats on):")
        for label, url in storages.items():
            print(f"  {label:<11} {storage_overhead(url, args.overhead_trials):6.1f} ms")
        # Warm-up, not counted: TensorFlow's import and first graph in this process would land on the first row.
        throughput(storages["SQLite"], 1, 1, Path(folder) / "runs")
        print(f"\nThroughput, {args.trials} tiny trials (shallow, 1,000 images, 2 epochs) per measurement, "
              f"{os.cpu_count()} CPU cores:")
        print(f"  {'storage':<11} {'workers':>7} {'trials/h':>9} {'s/trial':>8}")
        for label, url in storages.items():
            for workers in (1, 2):
                per_hour, seconds = throughput(url, workers, args.trials, Path(folder) / "runs")
                print(f"  {label:<11} {workers:>7} {per_hour:>9.0f} {seconds:>8.1f}")


if __name__ == "__main__":
    main()
