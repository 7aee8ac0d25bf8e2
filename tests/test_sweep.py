"""`digits sweep` as a user runs it: real subprocesses, a real SQLite file and a real PostgreSQL server, tiny trials."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from digits.cli import main
from digits.errors import DigitsError
from digits.sweeps.best import final_recipe
from digits.sweeps.space import load_space, shipped_spaces
from digits.training.runs import load_run

# Tiny trials: the shallow network on 1,000 images, scored on 200 holdout images.
TINY_SPACE = """
base = "quick-shallow"
seed = 0
[fixed]
epochs = {epochs}
train_limit = 1000
test_limit = 200
[search.learning_rate]
choices = [0.01, 0.02, 1e-7]
[search.batch_size]
choices = [128, 256]
[pruner]
kind = "{pruner}"
startup_trials = 1
"""


def write_space(folder: Path, name: str = "tiny", *, epochs: int = 2, pruner: str = "median") -> Path:
    path = folder / f"{name}.toml"
    path.write_text(TINY_SPACE.format(epochs=epochs, pruner=pruner))
    return path


def digits(*arguments, cwd, timeout=300):
    return subprocess.run([sys.executable, "-m", "digits", *map(str, arguments)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, check=False)


def start_digits(*arguments, cwd):
    return subprocess.Popen([sys.executable, "-m", "digits", *map(str, arguments)], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def load(storage: str, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=storage)


def states(study) -> dict[str, int]:
    from digits.sweeps.run import trial_counts

    return trial_counts(study)


def assert_trial_folders_honest(study):
    """Every trial trained on the holdout, and a folder says "complete" only for a COMPLETE trial."""
    from optuna.trial import TrialState

    for trial in study.get_trials():
        run_dir = trial.user_attrs.get("run_dir")
        if run_dir is None:
            continue
        config = json.loads((Path(run_dir) / "config.json").read_text())
        assert config["recipe"]["validation"] == "holdout", trial.number
        assert "test set is not used" in config["validation"]
        if trial.state == TrialState.COMPLETE:
            run = load_run(run_dir)
            assert run.metrics["validation_accuracy"] == pytest.approx(trial.value)
        else:
            with pytest.raises(DigitsError):
                load_run(run_dir)  # pruned, interrupted or killed: never presented as a finished run


# --- space files: one sentence each ------------------------------------------------------------------


BAD_SPACES = [
    ('base = "quick-cnn"\n[fixed]\nvalidation = "test"\n[search.learning_rate]\nlow = 0.001\nhigh = 0.01\n',
     "never on the test set"),
    ('base = "quick-cnn"\n[search.validation]\nchoices = ["test", "holdout"]\n', "never on the test set"),
    ('base = "quick-cnn"\n[search.learning_rat]\nlow = 0.001\nhigh = 0.01\n', "'learning_rat' is not a Recipe field"),
    ('base = "quick-cnn"\n[search.learning_rate]\nlow = 0.01\nhigh = 0.001\n', "low below high"),
    ('base = "quick-cnn"\n[search.learning_rate]\nlow = 0.0\nhigh = 0.01\nlog = true\n', "low must be above 0"),
    ('base = "quick-cnn"\n[search.augment_shift]\nlow = 0\nhigh = 12\n', "between 0 and 8 pixels"),
    ('base = "quick-cnn"\n[search.batch_size]\nlow = 16.5\nhigh = 64\n', "whole-number low and high"),
    ('base = "quick-cnn"\n[search.batch_size]\nlow = 16\nhigh = 64\nstep = 0.5\n', "step must be one too"),
    ('base = "no-such-preset"\n[search.epochs]\nlow = 1\nhigh = 3\n', "base must name a preset"),
    ('base = "quick-cnn"\n', "at least one [search.FIELD]"),
    ('base = "quick-cnn"\n[search.learning_rate\n', "not valid TOML"),
    # The file's declared model: finite numbers, ranges, known keys, and fixed values that make a recipe.
    ('base = "quick-cnn"\n[search.learning_rate]\nlow = 0.001\nhigh = inf\n',
     "search.learning_rate.high must be a finite number, not inf."),
    ('base = "quick-cnn"\ntrial_seconds = nan\n[search.epochs]\nlow = 1\nhigh = 3\n',
     "trial_seconds must be a finite number, not nan."),
    ('base = "quick-cnn"\n[pruner]\nwarmup_epochs = -1\n[search.epochs]\nlow = 1\nhigh = 3\n',
     "pruner.warmup_epochs must be between 0 and 100000, not -1."),
    ('base = "quick-cnn"\nsampler = "grid"\n[search.epochs]\nlow = 1\nhigh = 3\n',
     "sampler must be one of tpe, random, not 'grid'."),
    ('base = "quick-cnn"\ntrials = 5\n[search.epochs]\nlow = 1\nhigh = 3\n', "unknown key trials; use description,"),
    ('base = "quick-cnn"\n[fixed]\nepochs = "3"\n[search.learning_rate]\nlow = 0.001\nhigh = 0.01\n',
     "the fixed fields do not make a recipe: --epochs must be a number, not '3'."),
    ('base = "quick-cnn"\n[search.epochs]\nchoices = []\n', "search.epochs.choices must be a non-empty list"),
    # Issue 24: every number has a bound, and so does the file's size, nesting and lists.
    ('base = "quick-cnn"\nseed = 1099511627776\n[search.epochs]\nlow = 1\nhigh = 3\n',
     "seed must be between 0 and 4294967295, not 1099511627776."),
    ('base = "quick-cnn"\n[search.batch_size]\nlow = 1\nhigh = 9223372036854775807\n',
     "search.batch_size = 9223372036854775807 does not make a recipe: --batch-size must be between 1 and 60000"),
    ('base = "quick-cnn"\n[search.seed]\nchoices = [1, 1099511627776]\n', "--seed must be between 0 and 4294967295"),
    ('base = "quick-cnn"\n[pruner]\nstartup_trials = 9223372036854775807\n[search.epochs]\nlow = 1\nhigh = 3\n',
     "pruner.startup_trials must be between 0 and 100000"),
    ('base = "quick-cnn"\n[search.seed]\nchoices = [' + ", ".join(map(str, range(20_000))) + "]\n",
     "search.seed.choices lists 20,000 values; a sweep chooses among at most 1,000."),
    ('base = "quick-cnn"\nx = ' + "[" * 100_000 + "]" * 100_000 + "\n", "is nested too deeply to be a space"),
    ('base = "quick-cnn"\n# ' + "x" * 2**20 + "\n", "more than the 1,048,576 digits reads"),
]


# Named by the words each expects: some files are a megabyte long.
@pytest.mark.parametrize("content, words", BAD_SPACES, ids=[words[:60] for _, words in BAD_SPACES])
def test_a_bad_space_file_is_one_sentence_and_exit_1(tmp_path, capsys, content, words):
    space = tmp_path / "bad.toml"
    space.write_text(content)
    assert main(["sweep", str(space), "--trials", "2", "--runs-dir", str(tmp_path / "runs")]) == 1
    error = capsys.readouterr().err
    assert words in error
    assert error.startswith("digits: error: ") and error.count("\n") == 1 and "Traceback" not in error
    assert not (tmp_path / "runs").exists()  # refused before any database or folder was made


def test_a_space_file_that_is_a_pipe_is_refused_at_once(tmp_path, capsys):
    space = tmp_path / "space.toml"
    os.mkfifo(space)
    assert main(["sweep", str(space), "--trials", "1", "--runs-dir", str(tmp_path / "runs")]) == 1
    assert "(it is not a regular file but a folder, a pipe, a device or a socket)" in capsys.readouterr().err


@pytest.mark.parametrize("flags, words", [
    (["--trials", "9223372036854775807"], "--trials must be between 1 and 100,000, not 9223372036854775807."),
    (["--trials", "2", "--workers", "100000"], "--workers must be between 1 and 256, not 100000."),
    (["--trials", "2", "--heartbeat-seconds", "0"], "--heartbeat-seconds must be between 1 and 3,600, not 0."),
])
def test_a_sweep_count_out_of_range_is_one_sentence_before_any_work(tmp_path, capsys, flags, words):
    assert main(["sweep", str(write_space(tmp_path)), *flags, "--runs-dir", str(tmp_path / "runs")]) == 1
    assert capsys.readouterr().err.strip() == f"digits: error: {words}"
    assert not (tmp_path / "runs").exists()


def test_the_shipped_spaces_load_and_validate_on_the_holdout():
    assert {"quick-cnn", "shallow"} <= set(shipped_spaces())
    for name in shipped_spaces():
        space = load_space(name)
        assert space.base_recipe().validation == "holdout"
        assert space.dimensions


def test_a_missing_space_names_the_shipped_ones(tmp_path, capsys):
    assert main(["sweep", str(tmp_path / "nowhere.toml"), "--trials", "1"]) == 1
    assert "quick-cnn" in capsys.readouterr().err


# --- the sweep's page, from a study in memory ----------------------------------------------------------


def test_the_sweep_report_shows_the_best_trial_and_what_pruning_saved_with_every_name_escaped(tmp_path):
    import optuna
    from matplotlib import pyplot
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from digits.sweeps.report import render_sweep_report

    # A study name, a parameter name, a host and a runs folder a user (or another machine) chose.
    hostile = "<script>alert(1)</script>"
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    study = optuna.create_study(study_name=hostile, direction="maximize")
    study.set_user_attr("space", {"base": "quick-cnn", "dimensions": [{"name": hostile}]})
    distributions = {hostile: FloatDistribution(1e-5, 1.0, log=True)}
    for state, value, attributes in [
        (TrialState.COMPLETE, 0.9812, {"run_dir": str(tmp_path / hostile), "epochs": 3, "seconds": 30.0,
                                       "host": hostile}),
        (TrialState.PRUNED, None, {"epochs": 1, "seconds": 10.0, "recipe": {"epochs": 3}}),
        (TrialState.FAIL, None, {}),
    ]:
        study.add_trial(create_trial(state=state, value=value, params={hostile: 0.01}, distributions=distributions,
                                     user_attrs=attributes))
    figure = pyplot.figure(figsize=(2, 2))
    figure.savefig(tmp_path / "history.png")
    pyplot.close(figure)

    page = render_sweep_report(study, [(tmp_path / "history.png", "Optimisation history"),
                                       (tmp_path / "gone.png", "Parameter importances")], command=f"digits {hostile}")

    assert "<script" not in page
    # The title twice, the byline's command, the verdict twice (searched, best), the best trials' header and
    # run folder, the host and the run folder of every trial.
    assert page.count(escaped) >= 9
    assert "98.12 %" in page and "1 pruned · 1 failed" in page
    assert "pruning saved about 20.0 s" in page  # the pruned trial's two remaining epochs at 10 s each
    assert page.count('src="data:image/png;base64,') == 1 and "(figure missing: Parameter importances)" in page


# --- SQLite: a sweep end to end, pruned trials, report, best ------------------------------------------


@pytest.mark.slow
def test_a_sqlite_sweep_prunes_records_and_reports(tmp_path):
    import optuna

    from digits.sweeps.run import create_study, open_storage

    space = write_space(tmp_path)
    storage = f"sqlite:///{tmp_path / 'sweep.db'}"
    # Queue a good trial, a hopeless one (learning rate 1e-7), and the good one again (the same seed: it equals the
    # median, so it is not pruned), so the pruner's decisions are known.
    study = create_study(load_space(space), open_storage(storage), "tiny")
    for learning_rate in (0.02, 1e-7, 0.02):
        study.enqueue_trial({"learning_rate": learning_rate, "batch_size": 128})

    finished = digits("sweep", space, "--trials", 2, "--storage", storage, "--runs-dir", tmp_path / "runs",
                      cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr[-3000:]
    study = load(storage, "tiny")
    assert states(study) == {"COMPLETE": 2, "PRUNED": 1}
    pruned = study.trials[1]
    assert pruned.state == optuna.trial.TrialState.PRUNED and pruned.params["learning_rate"] == 1e-7
    assert json.loads((Path(pruned.user_attrs["run_dir"]) / "metrics.json").read_text())["status"] == "pruned"
    assert_trial_folders_honest(study)
    for trial in study.trials:  # the trial's folder lies in the sweep's own tree
        assert (Path(trial.user_attrs["run_dir"]).parent
                == tmp_path / "runs" / "sweeps" / "tiny" / f"trial-{trial.number:04d}")
    best = max(study.trials[0].value, study.trials[2].value)
    assert f"{best:.2%}" in finished.stdout and "1 pruned" in finished.stdout

    report = digits("sweep", "report", "tiny", "--storage", storage, "--out", tmp_path / "report.html", cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-3000:]
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") >= 3  # history, intermediate values, and more
    assert study.best_trial.user_attrs["run_dir"] in page and f"{100 * best:.2f} %" in page
    assert "1 pruned" in page and "http://" not in page and "https://" not in page

    listed = digits("sweep", "best", "tiny", "--storage", storage, "--top", 2, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert study.best_trial.user_attrs["run_dir"] in listed.stdout

    # The final model of the best recipe trains on all 60,000 images and scores nothing per epoch.
    final = final_recipe(study.best_trial, seed=3)
    assert (final.validation, final.train_limit, final.test_limit, final.seed) == ("none", None, None, 3)
    assert final.learning_rate == study.best_trial.params["learning_rate"]

    # Both complete trials have the same recipe, so an ensemble of two different ones is refused in a sentence.
    same = digits("ensemble", "--from-sweep", "tiny", "--top", 2, "--storage", storage, cwd=tmp_path)
    assert same.returncode == 1 and "fewer than --top 2" in same.stderr


@pytest.mark.slow
def test_an_interrupted_sweep_rerun_ends_with_exactly_the_asked_trials(tmp_path):
    from digits.sweeps.run import create_study, open_storage

    # 40 epochs: after the first (compiling) epoch the tiny data's epochs take a few ms each, and with 4 the trial
    # could finish before the test's Ctrl-C reached it (1 run in 3 failed so).
    space = write_space(tmp_path, epochs=40, pruner="none")
    storage = f"sqlite:///{tmp_path / 'sweep.db'}"
    study = create_study(load_space(space), open_storage(storage), "tiny")
    for learning_rate, batch_size in ((0.02, 128), (0.01, 128), (0.02, 256)):  # three different recipes
        study.enqueue_trial({"learning_rate": learning_rate, "batch_size": batch_size})
    arguments = ["sweep", space, "--trials", 3, "--storage", storage, "--runs-dir", tmp_path / "runs"]
    sweep = start_digits(*arguments, cwd=tmp_path)
    second_trial = tmp_path / "runs" / "sweeps" / "tiny" / "trial-0001"
    deadline = time.monotonic() + 240
    # Interrupt once the second trial has a finished epoch in its run folder.
    while time.monotonic() < deadline and not any(
            len(path.read_text().splitlines()) > 1 for path in second_trial.glob("*/history.csv")):
        assert sweep.poll() is None, sweep.stdout.read()[-3000:]
        time.sleep(0.2)
    sweep.send_signal(signal.SIGINT)
    output, _ = sweep.communicate(timeout=120)
    assert sweep.returncode == 130, output[-3000:]
    assert "run the same command again" in output

    study = load(storage, "tiny")
    assert states(study) == {"COMPLETE": 1, "FAIL": 1, "WAITING": 2}  # the third, and the interrupted one again
    interrupted = study.trials[1]
    assert json.loads((Path(interrupted.user_attrs["run_dir"]) / "metrics.json").read_text())["status"] == "interrupted"
    assert_trial_folders_honest(study)

    rerun = digits(*arguments, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    study = load(storage, "tiny")
    assert states(study) == {"COMPLETE": 3, "FAIL": 1}
    assert study.trials[3].params == interrupted.params  # the interrupted trial ran again
    assert_trial_folders_honest(study)

    # An ensemble of the sweep's three different recipes: their own run folders, scored on the test set.
    ensemble = digits("ensemble", "--from-sweep", "tiny", "--top", 3, "--storage", storage, cwd=tmp_path)
    assert ensemble.returncode == 0, ensemble.stderr[-3000:]
    [folder] = (tmp_path / "runs" / "sweeps" / "tiny").glob("*-ensemble")  # beside the trials, not inside one
    members = json.loads((folder / "ensemble.json").read_text())["members"]
    complete = [trial for trial in study.trials if trial.value is not None]
    assert sorted(member["run"] for member in members) == sorted(trial.user_attrs["run_dir"] for trial in complete)


# --- PostgreSQL: two workers as if on two machines, one killed mid-trial ---------------------------------


@pytest.mark.slow
def test_two_workers_on_postgres_survive_a_killed_worker(tmp_path):
    url = os.environ.get("DIGITS_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("DIGITS_TEST_POSTGRES_URL is not set; .ci/run starts a PostgreSQL server and sets it")
    from optuna.trial import TrialState

    study_name = f"two-machines-{os.getpid()}-{time.time_ns()}"  # a fresh study in a database that outlives tests
    space = write_space(tmp_path, epochs=6, pruner="none")
    arguments = ["sweep", space, "--trials", 3, "--storage", url, "--study", study_name, "--heartbeat-seconds", 1]
    # Two machines: each its own runs folder, both pointing at the same database.
    first = start_digits(*arguments, "--runs-dir", tmp_path / "machine-1", cwd=tmp_path)
    second = start_digits(*arguments, "--runs-dir", tmp_path / "machine-2", cwd=tmp_path)
    try:
        deadline, victim = time.monotonic() + 240, None
        while victim is None and time.monotonic() < deadline:
            assert first.poll() is None, first.stdout.read()[-3000:]
            time.sleep(0.2)
            try:
                running = load(url, study_name).get_trials(states=(TrialState.RUNNING,))
            except KeyError:  # the study is not created yet
                continue
            victim = next((trial for trial in running if trial.user_attrs.get("pid") == first.pid
                           and trial.intermediate_values), None)  # mid-trial: an epoch done, more to go
        assert victim is not None, "the first worker never got a trial under way"
        first.kill()  # SIGKILL: no cleanup, no last words, as when a machine dies
        first.wait(timeout=30)
        output, _ = second.communicate(timeout=300)
    finally:
        for worker in (first, second):
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    assert second.returncode == 0, output[-3000:]

    study = load(url, study_name)
    counts = states(study)
    assert counts["COMPLETE"] == 3 and counts.get("RUNNING", 0) == 0, counts
    killed = study.trials[victim.number]
    assert killed.state == TrialState.FAIL  # found stale by the surviving worker's heartbeat check
    retries = [trial for trial in study.trials if trial.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1 and retries[0].params == killed.params and retries[0].state == TrialState.COMPLETE
    assert not (Path(killed.user_attrs["run_dir"]) / "metrics.json").exists()
    assert_trial_folders_honest(study)


OPEN_AT_ONCE = """
import sys, time
from digits.sweeps.run import open_storage
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # every worker past its imports, then all at once
open_storage(sys.argv[1])
"""


@pytest.mark.slow
def test_workers_starting_together_on_an_empty_postgres_database_all_get_in(tmp_path):
    url = os.environ.get("DIGITS_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("DIGITS_TEST_POSTGRES_URL is not set; .ci/run starts a PostgreSQL server and sets it")
    import sqlalchemy

    # A brand-new database, as on the first day of a sweep across machines: every worker creates Optuna's tables.
    database = f"digits_empty_{os.getpid()}_{time.time_ns()}"
    server = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
    with server.connect() as connection:
        connection.execute(sqlalchemy.text(f"CREATE DATABASE {database}"))
    empty_url = sqlalchemy.engine.make_url(url).set(database=database).render_as_string(hide_password=False)
    start_at = str(time.time() + 8)
    workers = [subprocess.Popen([sys.executable, "-c", OPEN_AT_ONCE, empty_url, start_at], cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(4)]
    outputs = [worker.communicate(timeout=120)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0] * 4, "\n".join(outputs)[-3000:]
    with sqlalchemy.create_engine(empty_url).connect() as connection:
        tables = set(sqlalchemy.inspect(connection).get_table_names())
    assert {"studies", "trials", "version_info", "alembic_version"} <= tables


def test_the_command_line_loads_no_optuna_until_a_sweep_runs():
    # `digits --help` and every other command answer without importing Optuna, SQLAlchemy or Keras.
    probe = ("import sys, digits.cli; digits.cli.build_parser(); "
             "print(sorted({'optuna', 'sqlalchemy', 'keras'} & set(sys.modules)))")
    finished = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    assert finished.stdout.strip() == "[]", finished.stderr[-2000:]


@pytest.mark.slow
def test_a_trial_stops_at_the_first_epoch_end_past_its_time_budget(tmp_path):
    import tomllib

    from digits.sweeps.run import SweepJob, load_study, run_sweep
    from digits.sweeps.space import parse_space

    content = tomllib.loads(TINY_SPACE.format(epochs=3, pruner="none"))
    space = parse_space({**content, "trial_seconds": 0.001}, name="budget")
    storage = f"sqlite:///{tmp_path / 'sweep.db'}"
    counts = run_sweep(SweepJob(space=space, storage_url=storage, study_name="budget", trials=1, runs_dir=tmp_path),
                       progress=lambda line: None)
    assert counts == {"COMPLETE": 1}
    [trial] = load_study(storage, "budget").trials
    run = load_run(trial.user_attrs["run_dir"])
    assert trial.user_attrs["stopped_by_budget"] == 1 and run.metrics["epochs"] == 1 < space.base_recipe().epochs
    assert run.metrics["validation_accuracy"] == pytest.approx(trial.value)


@pytest.mark.slow
def test_a_journal_file_holds_a_sweep_too(tmp_path):
    from digits.sweeps.run import SweepJob, load_study, run_sweep

    storage = f"journal:{tmp_path / 'sweep.log'}"
    job = SweepJob(space=load_space(write_space(tmp_path, epochs=1, pruner="none")), storage_url=storage,
                   study_name="journal", trials=2, runs_dir=tmp_path)
    assert run_sweep(job, progress=lambda line: None) == {"COMPLETE": 2}
    assert_trial_folders_honest(load_study(storage, "journal"))


@pytest.mark.parametrize("storage, words", [
    ("journal:", "needs the path of a file"),
    ("journal:{tmp}", "needs the path of a file"),
    ("journal:{tmp}/notes.txt", "Cannot use"),
    ("postgresql://someone:s3cret@127.0.0.1:1/sweeps", "Cannot open the sweep storage"),
])
def test_a_bad_storage_is_one_sentence_that_never_shows_a_password(tmp_path, capsys, storage, words):
    (tmp_path / "notes.txt").write_text("not a journal\n")
    assert main(["sweep", "report", "any", "--storage", storage.format(tmp=tmp_path)]) == 1
    error = capsys.readouterr().err
    assert words in error and "s3cret" not in error and "Traceback" not in error and error.count("\n") == 1


def test_a_study_refuses_a_changed_space_but_not_a_renamed_file(tmp_path):
    import dataclasses

    from digits.sweeps.run import create_study, open_storage

    storage = open_storage(f"sqlite:///{tmp_path / 'sweeps.db'}")
    space = load_space(write_space(tmp_path))
    create_study(space, storage, "s")
    create_study(dataclasses.replace(space, name="the-same-space-elsewhere"), storage, "s")  # joins it
    changed = dataclasses.replace(space, fixed={**space.fixed, "epochs": space.fixed["epochs"] + 1})
    with pytest.raises(DigitsError, match=r"searched a space with other fixed \(from tiny\)"):
        create_study(changed, storage, "s")


def test_leftover_trial_folders_of_another_storage_are_refused(tmp_path, capsys):
    space = write_space(tmp_path)
    (tmp_path / "runs" / "sweeps" / "tiny" / "trial-0000").mkdir(parents=True)
    assert main(["sweep", str(space), "--trials", "1", "--runs-dir", str(tmp_path / "runs")]) == 1
    assert "holds trial folders of another sweep named 'tiny'" in capsys.readouterr().err


# --- issue 24: workers that start together draw differently; a new SQLite file opened at once --------------

# Continuous dimensions: two trials draw the same values only when they draw from the same seed.
DRAWN_SPACE = """
base = "quick-shallow"
seed = 7
[fixed]
epochs = 1
train_limit = 500
test_limit = 100
[search.learning_rate]
low = 0.001
high = 1.0
log = true
[search.momentum]
low = 0.0
high = 0.9
[pruner]
kind = "none"
"""


def drawn_params(space_path: Path, workers: int, trials_each: int) -> dict[int, dict]:
    """Each trial's parameters, by number, when `workers` sweeps join a fresh study together and then each draws
    `trials_each` trials in turn (what the sampler gives; no training)."""
    import optuna

    from digits.sweeps.run import create_study

    space, storage = load_space(space_path), optuna.storages.InMemoryStorage()
    # Every worker joins before any draws: as when `digits sweep` starts on several machines at once.
    studies = [create_study(space, storage, "together") for _ in range(workers)]
    drawn = {}
    for _ in range(trials_each):
        for study in studies:
            trial = study.ask()
            # As digits.sweeps.trial.suggest draws a float range (that module imports Keras: seconds to load).
            drawn[trial.number] = {dimension.name: trial.suggest_float(dimension.name, dimension.low, dimension.high,
                                                                       log=dimension.log)
                                   for dimension in space.dimensions}
            study.tell(trial, 0.5)
    return drawn


def test_sweeps_joining_a_fresh_study_together_draw_differently_and_a_rerun_draws_the_same(tmp_path):
    space = tmp_path / "drawn.toml"
    space.write_text(DRAWN_SPACE)
    first = drawn_params(space, workers=2, trials_each=3)
    values = [tuple(params.values()) for params in first.values()]
    assert len(values) == 6 and len(set(values)) == 6, first  # a seed per worker drew trials 0-1, 2-3... alike
    again = drawn_params(space, workers=2, trials_each=3)
    assert again == first  # the same sweep run again draws the same trials


@pytest.mark.slow
def test_two_sweep_commands_started_together_on_sqlite_draw_different_trials(tmp_path):
    space = tmp_path / "drawn.toml"
    space.write_text(DRAWN_SPACE)
    storage = f"sqlite:///{tmp_path / 'sweeps.db'}"
    arguments = ["sweep", space, "--trials", 4, "--storage", storage, "--study", "together"]
    workers = [start_digits(*arguments, "--runs-dir", tmp_path / f"machine-{number}", cwd=tmp_path)
               for number in (1, 2)]
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], "\n".join(outputs)[-3000:]
    trials = load(storage, "together").get_trials()
    # A worker that asked for a trial once the sweep had enough withdraws it before drawing anything.
    drawn = [trial for trial in trials if not trial.user_attrs.get("withdrawn")]
    values = [tuple(sorted(trial.params.items())) for trial in drawn]
    assert len(set(values)) == len(values) >= 4, values
    assert {trial.user_attrs["pid"] for trial in drawn} == {worker.pid for worker in workers}  # both drew trials


@pytest.mark.slow
def test_sweeps_opening_a_brand_new_sqlite_file_at_once_all_get_in(tmp_path):
    # 5 of 12 such openings (3 new files, 4 processes each) failed with "table ... already exists" before SQLite's
    # race was retried like PostgreSQL's.
    start_at = str(time.time() + 10)  # every process past its imports, then all at once
    workers = [subprocess.Popen([sys.executable, "-c", OPEN_AT_ONCE, f"sqlite:///{tmp_path / f'new-{file}.db'}",
                                 start_at], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for file in range(2) for _ in range(4)]
    outputs = [worker.communicate(timeout=120)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0] * 8, "\n".join(outputs)[-3000:]
