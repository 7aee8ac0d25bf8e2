"""How much faster `digits run` tells the study than the study's own plain Keras code, side by side on this CPU.

The reference is the study's code as written: float32, batch 128, a constant learning rate, one batch per
call into the graph (steps_per_execution=1), validation on the test set after every epoch, for its three recipes:

- shallow network, MSE + SGD lr 0.01: 409 epochs to pass the study's 90.34 % (of the 500 it ran);
- shallow network, Poisson + Adadelta (Keras defaults): the 500 epochs the study ran, for about 82 %;
- CNN, Adam lr 0.001: 15 epochs for the study's 99.28 %.

Running them to the end takes about an hour, so the reference trains a few epochs of each, takes the median
epoch (epoch 1, which includes tracing, is left out) and multiplies by those epochs. digits' side is measured
for real, as a user runs it: the whole default `digits run` in a fresh process (start-up, data, training of all
four models, evaluation, report), first with an empty precision cache (so it measures float32 against bfloat16
on this CPU, once) and then as every later run goes. Each model's own training time and test accuracy are read
from the study's run folders (the three shallow networks train together, so their rows show the fit they
share). It prints the whole study's ratio beside the goal (40×), each model's test accuracy beside the study's,
and where the seconds of the quoted `digits run` went (study.json's phases, the run folders'
epoch times, and a separate process timing the imports and the data).

    .venv/bin/python benchmarks/study_speed.py             # about 4 minutes on a 2-core CPU
    .venv/bin/python benchmarks/study_speed.py --runs 3    # three timed `digits run`s; the median is quoted
    # A lever's gain: this checkout against another one's src (git worktree add /tmp/before main), alternating.
    .venv/bin/python benchmarks/study_speed.py --runs 3 --against /tmp/before/src
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from digits.data.mnist import load_mnist  # noqa: E402
from digits.evaluation.conclusions import first_reaching  # noqa: E402
from digits.training.models import build_model  # noqa: E402
from digits.training.precision import cpu_description  # noqa: E402
from digits.training.recipes import STUDY_RESULTS  # noqa: E402
from digits.training.runs import load_run  # noqa: E402

# The study's recipes, the epochs the reference needs, and the quick preset `digits run` retells each with.
# The whole study's speed-up over the study's three recipes: the goal, and the figure it must never fall below.
GOAL = 40.0
FLOOR = 21.0
WORKLOADS = [
    ("shallow, MSE + SGD", "seed-shallow-mse", 409, "quick-shallow-mse"),
    ("shallow, Poisson + Adadelta", "seed-shallow-poisson", 500, "quick-shallow-poisson"),
    ("CNN", "seed-cnn", 15, "quick-cnn"),
]


class EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.started)


def reference_epoch_seconds(preset: str, data, epochs: int) -> float:
    """Median seconds per epoch (after the first) of the study's recipe in plain Keras, as the study wrote it."""
    from digits.data.mnist import to_model_input

    one_hot = np.eye(10, dtype="float32")
    train_images, train_labels = to_model_input(data.train_images), one_hot[data.train_labels]
    test_images, test_labels = to_model_input(data.test_images), one_hot[data.test_labels]
    keras.utils.set_random_seed(0)
    model = build_model("cnn" if preset == "seed-cnn" else "shallow")
    optimizer = {"seed-shallow-mse": lambda: keras.optimizers.SGD(0.01),
                 "seed-shallow-poisson": lambda: keras.optimizers.Adadelta(),
                 "seed-cnn": lambda: keras.optimizers.Adam()}[preset]()
    loss = {"seed-shallow-mse": "mse", "seed-shallow-poisson": "poisson", "seed-cnn": "categorical_crossentropy"}
    model.compile(optimizer=optimizer, loss=loss[preset], metrics=["accuracy"])  # Keras defaults otherwise
    timer = EpochTimer()
    model.fit(train_images, train_labels, batch_size=128, epochs=epochs, validation_data=(test_images, test_labels),
              callbacks=[timer], verbose=0)
    return float(np.median(timer.seconds[1:]))


def timed_digits_run(runs_dir: Path, cache_dir: Path, source: Path | None = None) -> tuple[float, str]:
    """Wall seconds of the default `digits run` in a fresh process, and what it printed; `source` runs another
    checkout's `src` folder instead of this one's (the --against comparison)."""
    command = [sys.executable, "-m", "digits", "run", "--runs-dir", str(runs_dir)]
    environment = {**os.environ, "DIGITS_CACHE_DIR": str(cache_dir)}
    if source is not None:
        environment["PYTHONPATH"] = str(source)
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True, timeout=1800, env=environment)
    seconds = time.perf_counter() - started
    if finished.returncode != 0:
        raise SystemExit(f"digits run failed:\n{finished.stderr[-2000:]}")
    return seconds, finished.stdout


def newest_study(runs_dir: Path) -> Path:
    return max((path for path in runs_dir.iterdir() if path.name.endswith("-study")), key=lambda path: path.name)


def study_runs(runs_dir: Path) -> dict[str, dict]:
    """The newest study's runs in runs_dir, by preset: metrics, history, config and the test evaluation."""
    runs = {}
    for run_path in json.loads((newest_study(runs_dir) / "study.json").read_text())["runs"]:
        run = load_run(run_path)
        evaluation = json.loads((run.path / "evaluation" / "evaluation.json").read_text())["evaluation"]
        runs[run.config["preset"]] = {"metrics": run.metrics, "history": run.history, "config": run.config,
                                      "accuracy": evaluation["accuracy"]}
    return runs


def fits_seconds(runs: dict[str, dict]) -> float:
    """Seconds in fit() of a study's runs, a fit shared by models trained together counted once."""
    fits = {frozenset([preset, *run["config"].get("trained_together_with", [])]): run["metrics"]["training_seconds"]
            for preset, run in runs.items()}
    return sum(fits.values())


def start_up_seconds() -> tuple[float, float]:
    """Seconds a fresh process takes to import what `digits run` imports (TensorFlow, Keras, matplotlib), and
    then to load and verify MNIST."""
    script = ("import time; started = time.perf_counter(); import digits.study, digits.training.fit; "
              "imported = time.perf_counter(); from digits.data.mnist import load_mnist; load_mnist(); "
              "print(imported - started, time.perf_counter() - imported)")
    finished = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, check=True)
    imports, data = finished.stdout.split()
    return float(imports), float(data)


def breakdown(wall: float, runs_dir: Path, start_up: tuple[float, float]) -> list[tuple[str, float, str]]:
    """Where the seconds of one `digits run` went: (phase, seconds, note), from its study.json and run folders."""
    seconds = json.loads((newest_study(runs_dir) / "study.json").read_text())["seconds"]
    runs = study_runs(runs_dir)
    # The figures are drawn beside training, so only the main thread's phases add up to the wall time.
    in_process = sum(value for name, value in seconds.items() if not name.startswith("figures and report"))
    imports, data = start_up
    rows = [("start-up: Python, imports, MNIST, printing (the rest of the wall time)", wall - in_process,
             f"measured apart: imports {imports:.1f} s, loading and verifying MNIST {data:.1f} s")]
    for name, value in seconds.items():
        presets = name.split(" ", 1)[-1].split(" + ")
        preset = presets[-1]
        note = ""
        if name.startswith("train ") and all(preset in runs for preset in presets):
            # Models trained together share one fit(): its epochs and seconds are in each of their run folders.
            epochs = [float(epoch) for epoch in runs[preset]["history"]["seconds"]]
            typical = statistics.median(epochs[1:]) if len(epochs) > 1 else epochs[0]
            fit = runs[preset]["metrics"]["training_seconds"]
            together = f"{len(presets)} models in one fit(), " if len(presets) > 1 else ""
            note = (f"{together}fit {fit:.1f} s: {len(epochs)} epochs of about {typical:.1f} s, the first "
                    f"{epochs[0] - typical:+.1f} s (building the graphs); {value - fit:.1f} s before and after fit "
                    "(data, model, compile, save)")
        elif name.startswith("figures and report"):
            last = preset == list(runs)[-1]
            note = ("drawn in a second thread while the study waits (no model is left to train)" if last
                    else "drawn in a second thread while the next model trains")
        rows.append((name, value, note))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="reference epochs measured per recipe (default 3)")
    parser.add_argument("--runs", type=int, default=1, help="timed `digits run`s after the first (default 1)")
    parser.add_argument("--against", type=Path, metavar="SRC",
                        help="also time `digits run` from another checkout's src folder (a lever's before), "
                        "alternating with this one, and print the two side by side")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    if args.epochs < 2:
        raise SystemExit("--epochs must be at least 2: the first epoch includes tracing and is left out.")
    if args.runs < 1:
        raise SystemExit("--runs must be at least 1.")
    if args.against is not None and not (args.against / "digits" / "__init__.py").is_file():
        raise SystemExit(f"--against wants a checkout's src folder, holding digits/__init__.py; {args.against} "
                         "does not.")

    cpu, flags = cpu_description()
    features = ", ".join(sorted(flag for flag in flags if flag in ("amx_bf16", "avx512_bf16", "avx512f")))
    print(f"CPU: {cpu} ({features or 'no AVX-512'}); {os.cpu_count()} CPUs; Python {platform.python_version()}; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    data = load_mnist()
    work = Path(tempfile.mkdtemp(prefix="digits-study-speed-"))

    # Side by side in one process tree, one after the other: the study's code, then digits. On a shared machine
    # the load average printed first and last says whether the two sides saw the same machine.
    reference = {preset: reference_epoch_seconds(preset, data, args.epochs) for _, preset, _, _ in WORKLOADS}
    per_epoch = ", ".join(f"{preset} {seconds:.2f}" for preset, seconds in reference.items())
    print(f"reference seconds per epoch: {per_epoch}",
          flush=True)
    first_seconds, _ = timed_digits_run(work / "runs-first", work / "cache")  # measures the precision, once
    walls, against_walls, output = [], [], ""
    for number in range(args.runs):
        seconds, output = timed_digits_run(work / f"runs-{number}", work / "cache")
        walls.append(seconds)
        if args.against is not None:
            against_walls.append(timed_digits_run(work / f"against-{number}", work / "cache", args.against)[0])
    # The run whose wall time is the median is the one broken down and quoted.
    quoted = sorted(range(len(walls)), key=walls.__getitem__)[len(walls) // 2]
    runs_dir = work / f"runs-{quoted}"
    runs = study_runs(runs_dir)
    start_up = start_up_seconds()

    rows = []
    for label, seed, epochs, quick in WORKLOADS:
        figure = STUDY_RESULTS[seed]
        run = runs[quick]
        reached = first_reaching(run["history"], figure.accuracy)
        reached_words = f"reached {100 * figure.accuracy:.2f} % at epoch {reached.epoch}" if reached else "not reached"
        verdict = "at least the study's" if run["accuracy"] >= figure.accuracy else "BELOW the study's"
        shared = ", the fit it shares with " + " and ".join(run["config"]["trained_together_with"]) if (
            run["config"].get("trained_together_with")) else ""
        rows.append([f"{label}: `{quick}` against the study's {epochs} epochs{shared}", reference[seed] * epochs,
                     run["metrics"]["training_seconds"], f"{100 * run['accuracy']:.2f} %, {verdict} (study: "
                     f"{figure.words}; {reached_words})"])
    best = runs["quick-shallow"]
    rows.append(["shallow at its best: `quick-shallow` (cross-entropy; not in the study; trained with the other two)",
                 None, best["metrics"]["training_seconds"], f"{100 * best['accuracy']:.2f} %"])
    reference_total = sum(reference[seed] * epochs for _, seed, epochs, _ in WORKLOADS)
    wall = walls[quoted]
    accuracies = " / ".join(f"{100 * runs[quick]['accuracy']:.2f} %" for _, _, _, quick in WORKLOADS)
    rows.append([f"**whole study: `digits run`, one process (start-up, data, 4 models, evaluation, report)**; "
                 f"goal ≥ {GOAL:.0f}×, never below {FLOOR:.0f}×", reference_total, wall,
                 f"{accuracies} (MSE / Poisson / CNN)"])
    rows.append(["the same, first run on this CPU (measures float32 against bfloat16 once)", reference_total,
                 first_seconds, ""])

    cnn_config = runs["quick-cnn"]["config"]
    reason = cnn_config.get("precision_choice", {}).get("reason", "")
    print(f"\nCPU: {cpu}; load average at the end {os.getloadavg()[0]:.1f}; CNN precision "
          f"{cnn_config['precision']} ({reason})\n")
    print("| workload | reference (plain Keras) | digits | ratio | accuracy reached |")
    print("|---|---:|---:|---:|---|")
    for name, reference_seconds, seconds, accuracy in rows:
        ratio = f"{reference_seconds / seconds:.1f}×" if reference_seconds else "—"
        shown = f"{reference_seconds:,.0f} s" if reference_seconds else "—"
        print(f"| {name} | {shown} | {seconds:.1f} s | {ratio} | {accuracy} |")
    ratio = reference_total / wall
    status = "met" if ratio >= GOAL else ("not met, above the floor" if ratio >= FLOOR else "BELOW the floor")
    print(f"\nWhole study: {ratio:.1f}× the study's three recipes (goal ≥ {GOAL:.0f}×: {status}).")

    phases = breakdown(wall, runs_dir, start_up)
    print(f"\nWhere the {wall:.1f} s of the quoted `digits run` went:\n")
    print("| phase | seconds | share | note |")
    print("|---|---:|---:|---|")
    for name, seconds, note in phases:
        print(f"| {name} | {seconds:.1f} | {100 * seconds / wall:.0f} % | {note} |")
    if len(walls) > 1:
        print(f"\n`digits run` wall seconds: {', '.join(f'{seconds:.1f}' for seconds in walls)}")
    if against_walls:
        print(f"\n--against {args.against}, run alternately with this checkout: "
              f"{', '.join(f'{seconds:.1f}' for seconds in against_walls)} s against "
              f"{', '.join(f'{seconds:.1f}' for seconds in walls)} s; medians "
              f"{statistics.median(against_walls):.1f} s and {statistics.median(walls):.1f} s, "
              f"{statistics.median(against_walls) / statistics.median(walls):.2f}× faster")
        for side, side_walls, prefix in (("--against", against_walls, "against"), ("this checkout", walls, "runs")):
            trainings = [study_runs(work / f"{prefix}-{number}") for number in range(args.runs)]
            cnn = statistics.median(runs["quick-cnn"]["metrics"]["training_seconds"] for runs in trainings)
            outside = statistics.median(wall - fits_seconds(runs)
                                        for wall, runs in zip(side_walls, trainings, strict=True))
            print(f"{side}: medians of the CNN's fit {cnn:.1f} s, and of the wall time outside the four fits "
                  f"(start-up, graph building outside fit, evaluation, figures, reports) {outside:.1f} s")
    print(f"\n`digits run` printed:\n{output}")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu, "reference_epoch_seconds": reference, "rows": rows,
                                         "digits_run_seconds": walls, "first_run_seconds": first_seconds,
                                         "against_seconds": against_walls, "breakdown": phases},
                                        indent=2, default=str))


if __name__ == "__main__":
    main()
