"""Sweeps: search a space of recipes on the holdout with Optuna, one run folder per trial.

Every trial calls `digits.training.fit.train`, like every run, with validation on the holdout. The coordination is
Optuna's: workers on this machine or on others share one study through its storage (SQLite by default,
PostgreSQL or any SQLAlchemy URL for several machines, or a journal file). A trial's folder is
`RUNS_DIR/sweeps/<study>/trial-NNNN/<run folder>/`; the trial records that folder, its host and its recipe.

A sweep is done when the study holds `trials` COMPLETE trials: pruned trials (stopped early as hopeless) and
failed ones (a killed worker, Ctrl-C) are extra attempts, so an interrupted sweep, run again, ends with exactly
the number asked for. A killed worker's trial stops sending heartbeats; another worker marks it failed after
three missed heartbeats and runs its parameters again. Ctrl-C closes the current run folder ("interrupted"), fails its
trial and queues its parameters, so a rerun starts with them.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import random
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from digits.data.mnist import Mnist
from digits.errors import DigitsError
from digits.sweeps.space import SWEEPS_DIR, SearchSpace

DEFAULT_DATABASE = "sweeps.db"
JOURNAL_PREFIX = "journal:"
# A running trial writes a heartbeat every HEARTBEAT_SECONDS; one silent for GRACE_HEARTBEATS of them is stale,
# so its worker is dead: the trial is failed and its parameters run again, at most MAX_RETRIES times.
HEARTBEAT_SECONDS = 10
GRACE_HEARTBEATS = 3
MAX_RETRIES = 3
# How often a worker that waits for other workers' trials looks at the study again.
POLL_SECONDS = 2.0
# SQLite lets one writer in at a time; several workers wait this long for the lock instead of failing.
SQLITE_TIMEOUT_SECONDS = 60
# How many times a worker tries to set up the storage's tables while other workers set them up too.
SCHEMA_ATTEMPTS = 6
# Bounds on the counts a user gives (issue 24): each far beyond use, checked before Optuna or Keras load.
MAX_TRIALS = 100_000
MAX_WORKERS = 256  # processes on this machine, each training its own model
MAX_HEARTBEAT_SECONDS = 3600


# --- storage and study ----------------------------------------------------------------------------


def default_storage(runs_dir: str | Path, *, create: bool = True) -> str:
    """The embedded default: an SQLite file under the runs folder (its folder made when `create`)."""
    path = (Path(runs_dir) / SWEEPS_DIR / DEFAULT_DATABASE).resolve()
    if create:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DigitsError(f"Cannot create {path.parent} ({error.strerror}); give a writable `runs_dir`.") from None
    elif not path.is_file():
        raise DigitsError(f"There is no sweep database {path}; run a sweep first, or give its `storage`.")
    return f"sqlite:///{path}"


def open_storage(url: str, heartbeat_seconds: int = HEARTBEAT_SECONDS):
    """An Optuna storage for an SQLAlchemy URL (with heartbeats) or `journal:PATH` (a journal file)."""
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own line per trial says what matters
    if url.startswith(JOURNAL_PREFIX):
        path = Path(url[len(JOURNAL_PREFIX):]).expanduser()
        if not url[len(JOURNAL_PREFIX):] or path.is_dir():
            raise DigitsError(f"journal:PATH needs the path of a file, not {str(path)!r}; give one such as "
                              "journal:sweeps.log.")
        if not path.parent.is_dir():
            raise DigitsError(f"The folder of the journal file {path} does not exist; create it or pick another path.")
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        try:
            # Optuna reads the file lazily and takes a bad last line for a torn write, so look at the first one now.
            if path.is_file() and path.stat().st_size:
                with path.open("rb") as journal:
                    json.loads(journal.readline())
            return JournalStorage(JournalFileBackend(str(path)))
        except (OSError, ValueError) as error:  # unreadable, or not a journal (its lines are not Optuna's JSON)
            raise DigitsError(f"Cannot use {path} as a sweep journal ({type(error).__name__}); give a journal file "
                              "written by `digits sweep`, or a new path.") from None
    if "://" not in url:
        raise DigitsError(f"`storage` takes an SQLAlchemy URL (sqlite:///sweeps.db, postgresql://host/db) or "
                          f"journal:PATH, not {url!r}.")
    if url.startswith("postgres://"):
        url = "postgresql://" + url.split("://", 1)[1]  # Heroku-style; SQLAlchemy knows only "postgresql".
    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg2") is None:
        # SQLAlchemy's default PostgreSQL driver is psycopg2; digits installs psycopg (3), so plain URLs use it.
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_SECONDS}} if url.startswith("sqlite") else {}
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    last_error: Exception = RuntimeError("no attempt")
    for attempt in range(1, SCHEMA_ATTEMPTS + 1):
        try:
            return optuna.storages.RDBStorage(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_seconds,
                grace_period=GRACE_HEARTBEATS * heartbeat_seconds,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES))
        except (IntegrityError, ProgrammingError, OperationalError) as error:
            # Workers that start together on an empty database all create Optuna's tables; all but one lose that
            # race ("duplicate key", "already exists": PostgreSQL's IntegrityError or ProgrammingError, SQLite's
            # OperationalError). Each step checks before it creates, so trying again is safe. Any other
            # OperationalError (no such host, a locked file past its timeout) means the storage cannot be used.
            last_error = error
            if isinstance(error, OperationalError) and "already exists" not in str(error):
                break
            time.sleep(random.uniform(0.1, 0.5) * attempt)
        except Exception as error:  # noqa: BLE001  SQLAlchemy's and the drivers' many errors all mean "cannot use it".
            last_error = error
            break
    reason = str(last_error).strip().splitlines()[0] if str(last_error).strip() else type(last_error).__name__
    raise DigitsError(f"Cannot open the sweep storage {shown_url(url)} ({reason}); check the URL and that the "
                      "database is running and reachable.") from None


def shown_url(url: str) -> str:
    """A storage URL fit to print or save in a report: any password replaced by ***."""
    if "://" not in url:
        return url
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return url


def has_heartbeat(storage) -> bool:
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return is_heartbeat_enabled(storage)


def create_study(space: SearchSpace, storage, study_name: str):
    """Create the study, or join it when it exists (another worker or machine started it) with the same space."""
    import optuna

    optuna.create_study(storage=storage, study_name=study_name, direction="maximize", load_if_exists=True)
    sampler: optuna.samplers.BaseSampler
    if space.seed is None:  # A fresh seed for each worker: nothing to reproduce.
        sampler = optuna.samplers.RandomSampler() if space.sampler == "random" else optuna.samplers.TPESampler()
    else:
        from digits.sweeps.sampler import TrialSeededSampler

        # Each trial's draws follow from the space's seed and the trial's number: workers started together draw
        # differently (a seed per worker made them draw alike), and the same sweep run again draws the same.
        sampler = TrialSeededSampler(space.sampler, space.seed)
    study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler, pruner=make_pruner(space))
    described = space_record(space)
    recorded = study.user_attrs.get("space")
    if recorded is None:
        study.set_user_attr("space", described)
        study.set_user_attr("objective", "holdout accuracy of the last epoch (maximised)")
    else:
        # The file's name does not matter, only what it searches.
        changed = sorted(key for key in described if key != "name" and recorded.get(key) != described[key])
        if changed:
            raise DigitsError(f"The study {study_name!r} in this storage searched a space with other "
                              f"{', '.join(changed)} (from {recorded['name']}); undo that change, or give a new "
                              "`study` name.")
    return study


def space_record(space: SearchSpace) -> dict:
    """What identifies a space inside a study: its base, fixed fields and dimensions (not where the file lies)."""
    record = {"name": space.name, "base": space.base, "fixed": space.fixed, "trial_seconds": space.trial_seconds,
              "dimensions": [dataclasses.asdict(dimension) for dimension in space.dimensions]}
    return json.loads(json.dumps(record))  # as the storage gives it back: tuples become lists


def make_pruner(space: SearchSpace):
    import optuna

    settings = space.pruner
    if settings["kind"] == "none":
        return optuna.pruners.NopPruner()
    if settings["kind"] == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, settings.get("warmup_epochs", 1)),
                                                      bootstrap_count=settings.get("startup_trials", 0))
    return optuna.pruners.MedianPruner(n_startup_trials=settings.get("startup_trials", 5),
                                       n_warmup_steps=settings.get("warmup_epochs", 0))


def load_study(storage_url: str, study_name: str):
    """An existing study, or one sentence naming the studies this storage holds."""
    import optuna

    storage = open_storage(storage_url)
    names = optuna.get_all_study_names(storage)
    if study_name not in names:
        raise DigitsError(f"There is no study {study_name!r} in {shown_url(storage_url)}; it holds "
                          f"{', '.join(names) if names else 'none'}.")
    return optuna.load_study(study_name=study_name, storage=storage)


def trial_counts(study) -> dict[str, int]:
    """How many trials are in each state ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")."""
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


# --- workers --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepJob:
    """What a worker needs to join a sweep; plain values, so it crosses into a spawned process."""

    space: SearchSpace
    storage_url: str
    study_name: str
    trials: int
    runs_dir: Path
    data_dir: Path | None = None
    worker: str = "1"
    heartbeat_seconds: int = HEARTBEAT_SECONDS
    quiet: bool = False  # no line per trial (a spawned worker cannot be handed a print function)


def work(job: SweepJob, data: Mnist | None = None, progress=print) -> dict[str, int]:
    """Run trials of the study until it holds `job.trials` complete ones; returns the study's trial counts.

    Raises KeyboardInterrupt (after closing the current trial) on Ctrl-C or SIGTERM.
    """
    # SIGTERM (a scheduler stopping the job) closes the trial like Ctrl-C does; handlers belong to the main thread.
    main_thread = threading.current_thread() is threading.main_thread()
    previous_handler = signal.signal(signal.SIGTERM, signal.default_int_handler) if main_thread else None
    try:
        return _work(job, data, progress)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous_handler)


def _work(job: SweepJob, data: Mnist | None, progress) -> dict[str, int]:
    import optuna
    from optuna.trial import TrialState

    storage = open_storage(job.storage_url, job.heartbeat_seconds)
    study = create_study(job.space, storage, job.study_name)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # retracing notes: one per trial, nothing to act on
    if data is None:
        from digits.data.mnist import load_mnist

        data = load_mnist(job.data_dir)

    from digits.sweeps.trial import run_trial

    def objective(trial):
        return run_trial(trial, job.space, data, Path(job.runs_dir), target_trials=job.trials,
                         progress=lambda line: progress(f"[worker {job.worker}] {line}"))

    while True:
        if has_heartbeat(storage):
            optuna.storages.fail_stale_trials(study)  # a dead worker's trial: failed, its parameters queued again
        complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        if complete >= job.trials:
            break
        if complete + running >= job.trials:
            if not has_heartbeat(storage):
                # A journal file has no heartbeat: a running trial may belong to a dead worker, so stop waiting.
                progress(f"[worker {job.worker}] {running} trial(s) still running elsewhere; stopping this worker.")
                break
            time.sleep(POLL_SECONDS)  # other workers' trials may still finish or fail: wait for them
            continue
        # One trial per call: the count above decides before each trial whether the sweep needs another. A
        # DigitsError (a full disk, a removed folder) fails the trial and stops this worker with its sentence.
        study.optimize(objective, n_trials=1)
    return trial_counts(study)


def _worker_process(job: SweepJob) -> None:
    """The body of a spawned worker: its own process group, so only the parent forwards a Ctrl-C to it once."""
    os.setpgrp()
    # Take the forwarded SIGINT as Ctrl-C even when the parent's shell started it with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        work(job, progress=(lambda line: None) if job.quiet else (lambda line: print(line, flush=True)))
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except DigitsError as error:
        print(f"digits: error: [worker {job.worker}] {error}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def run_sweep(job: SweepJob, workers: int = 1, progress=print) -> dict[str, int]:
    """Run the sweep with `workers` processes on this machine (1: in this process); returns the trial counts.

    Raises KeyboardInterrupt after every worker has closed its trial, if the user pressed Ctrl-C.
    """
    if not 1 <= workers <= MAX_WORKERS:
        raise DigitsError(f"The number of workers must be between 1 and {MAX_WORKERS}, not {workers}.")
    if not 1 <= job.trials <= MAX_TRIALS:
        raise DigitsError(f"The number of trials must be between 1 and {MAX_TRIALS:,}, not {job.trials}.")
    if not 1 <= job.heartbeat_seconds <= MAX_HEARTBEAT_SECONDS:
        raise DigitsError(f"The heartbeat interval must be between 1 and {MAX_HEARTBEAT_SECONDS:,} seconds, not "
                          f"{job.heartbeat_seconds}.")
    study = create_study(job.space, open_storage(job.storage_url), job.study_name)  # bad storage or space: a sentence
    trial_folders = job.runs_dir / SWEEPS_DIR / job.study_name
    if not study.trials and any(trial_folders.glob("trial-*")):
        raise DigitsError(f"{trial_folders} holds trial folders of another sweep named {job.study_name!r} (its "
                          "storage is not this one); give a new `study` name or another `runs_dir`.")
    if workers == 1:
        return work(job, progress=progress)
    import multiprocessing

    # Spawned, not forked: TensorFlow's threads do not survive a fork.
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker_process, args=(dataclasses.replace(job, worker=str(number)),))
                 for number in range(1, workers + 1)]
    for process in processes:
        process.start()
    interrupted = False
    # SIGTERM to this process (a scheduler stopping the job) is forwarded like Ctrl-C, so no worker is orphaned.
    main_thread = threading.current_thread() is threading.main_thread()
    previous_handler = signal.signal(signal.SIGTERM, signal.default_int_handler) if main_thread else None
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        interrupted = True
        for process in processes:
            if process.is_alive():
                assert process.pid is not None  # a started process has one
                os.kill(process.pid, signal.SIGINT)
        for process in processes:
            process.join()
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous_handler)
    if interrupted or any(process.exitcode == 130 for process in processes):
        raise KeyboardInterrupt
    if any(process.exitcode for process in processes):
        raise DigitsError(f"{sum(1 for process in processes if process.exitcode)} of {workers} workers failed; "
                          "their errors are above.")
    return trial_counts(load_study(job.storage_url, job.study_name))
