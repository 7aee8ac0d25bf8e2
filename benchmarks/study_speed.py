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
from the study's run folders.

    .venv/bin/python benchmarks/study_speed.py             # about 4 minutes on a 2-core CPU
    .venv/bin/python benchmarks/study_speed.py --runs 3    # three timed `digits run`s; the median is quoted
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


def timed_digits_run(runs_dir: Path, cache_dir: Path) -> tuple[float, str]:
    """Wall seconds of the default `digits run` in a fresh process, and what it printed."""
    command = [sys.executable, "-m", "digits", "run", "--runs-dir", str(runs_dir)]
    environment = {**os.environ, "DIGITS_CACHE_DIR": str(cache_dir)}
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True, timeout=1800, env=environment)
    seconds = time.perf_counter() - started
    if finished.returncode != 0:
        raise SystemExit(f"digits run failed:\n{finished.stderr[-2000:]}")
    return seconds, finished.stdout


def study_runs(runs_dir: Path) -> dict[str, dict]:
    """The newest study's runs in runs_dir, by preset: metrics, history, config and the test evaluation."""
    study = max((path for path in runs_dir.iterdir() if path.name.endswith("-study")), key=lambda path: path.name)
    runs = {}
    for run_path in json.loads((study / "study.json").read_text())["runs"]:
        run = load_run(run_path)
        evaluation = json.loads((run.path / "evaluation" / "evaluation.json").read_text())["evaluation"]
        runs[run.config["preset"]] = {"metrics": run.metrics, "history": run.history, "config": run.config,
                                      "accuracy": evaluation["accuracy"]}
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="reference epochs measured per recipe (default 3)")
    parser.add_argument("--runs", type=int, default=1, help="timed `digits run`s after the first (default 1)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    if args.epochs < 2:
        raise SystemExit("--epochs must be at least 2: the first epoch includes tracing and is left out.")

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
    walls, output = [], ""
    for _ in range(args.runs):
        seconds, output = timed_digits_run(work / "runs", work / "cache")
        walls.append(seconds)
    runs = study_runs(work / "runs")

    rows = []
    for label, seed, epochs, quick in WORKLOADS:
        figure = STUDY_RESULTS[seed]
        run = runs[quick]
        reached = first_reaching(run["history"], figure.accuracy)
        reached_words = f"reached {100 * figure.accuracy:.2f} % at epoch {reached.epoch}" if reached else "not reached"
        rows.append([f"{label}: `{quick}` against the study's {epochs} epochs", reference[seed] * epochs,
                     run["metrics"]["training_seconds"], f"{100 * run['accuracy']:.2f} % (study: {figure.words}; "
                     f"{reached_words})"])
    best = runs["quick-shallow"]
    rows.append(["shallow at its best: `quick-shallow` (cross-entropy; not in the study)", None,
                 best["metrics"]["training_seconds"], f"{100 * best['accuracy']:.2f} %"])
    reference_total = sum(reference[seed] * epochs for _, seed, epochs, _ in WORKLOADS)
    wall = statistics.median(walls)
    accuracies = " / ".join(f"{100 * runs[quick]['accuracy']:.2f} %" for _, _, _, quick in WORKLOADS)
    rows.append(["whole study: `digits run`, one process (start-up, data, 4 models, evaluation, report)",
                 reference_total, wall, f"{accuracies} (MSE / Poisson / CNN)"])
    rows.append(["the same, first run on this CPU (measures float32 against bfloat16 once)", reference_total,
                 first_seconds, ""])

    cnn_config = runs["quick-cnn"]["config"]
    reason = cnn_config.get("precision_choice", {}).get("reason", "")
    print(f"\nCPU: {cpu}; load average at the end {os.getloadavg()[0]:.1f}; CNN precision "
          f"{cnn_config['precision']} ({reason})\n")
    print("| workload | reference (plain Keras) | digits | ratio | accuracy reached |")
    print("|---|---:|---:|---:|---|")
    for name, reference_seconds, seconds, accuracy in rows:
        ratio = f"{reference_seconds / seconds:.0f}×" if reference_seconds else "—"
        shown = f"{reference_seconds:,.0f} s" if reference_seconds else "—"
        print(f"| {name} | {shown} | {seconds:.1f} s | {ratio} | {accuracy} |")
    if len(walls) > 1:
        print(f"\n`digits run` wall seconds: {', '.join(f'{seconds:.1f}' for seconds in walls)}")
    print(f"\n`digits run` printed:\n{output}")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu, "reference_epoch_seconds": reference, "rows": rows,
                                         "digits_run_seconds": walls, "first_run_seconds": first_seconds},
                                        indent=2, default=str))


if __name__ == "__main__":
    main()
