"""How much faster `digits` trains the study than the study's own plain Keras code, on this machine.

The reference is the study's code as written: float32, batch 128, a constant learning rate, one batch per
call into the graph (steps_per_execution=1), validation on the test set after every epoch. Running it to the
end takes about ten minutes, so it trains a few epochs per model, takes the median epoch time (epoch 1,
which includes tracing, is left out) and multiplies by the epochs the reference needs:

- shallow network, MSE + SGD lr 0.01: 409 epochs to pass the study's 90.34 % (measured in the issue);
- CNN, Adam lr 0.001: 15 epochs for the study's 99.28 %.

digits' side is measured for real: `quick-shallow` and `quick-cnn` train until they reach those accuracies
(time to reach the study's accuracy, measured on the test set, as the study validated), `quick-shallow-best`
trains its 14 epochs, and the study's exact recipes (`seed-shallow-mse`, `seed-cnn`, same math) train a
few epochs for their per-epoch speed-up. Last, a whole `digits run` is timed as a user runs it.

    .venv/bin/python benchmarks/study_speed.py            # about 5 minutes on a 2-core CPU
    .venv/bin/python benchmarks/study_speed.py --quick    # reference and fast path only, about 2 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from digits.data import load_mnist  # noqa: E402
from digits.models import build_model  # noqa: E402
from digits.recipes import STUDY_ACCURACY, get_preset, with_overrides  # noqa: E402
from digits.runs import load_run  # noqa: E402
from digits.train import prepare_data, train  # noqa: E402

# Epochs the study's recipes need to reach its accuracies (shallow: first epoch above 90.34 %).
REFERENCE_EPOCHS = {"shallow": 409, "cnn": 15}
# The CNN's forward pass: 26·26·32·9 + 11·11·64·288 + 1600·10 multiply-accumulates per image; training
# (forward, gradients of activations and of weights) costs about three forward passes.
CNN_FORWARD_MACS = 26 * 26 * 32 * 9 + 11 * 11 * 64 * 288 + 1600 * 10  # 2,440,960
CNN_TRAINING_FLOP_PER_IMAGE = 3 * 2 * CNN_FORWARD_MACS


class EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.started)


def reference_epoch_seconds(model_name: str, data, epochs: int) -> float:
    """Median seconds per epoch (after the first) of the study's plain Keras recipe."""
    recipe = get_preset("seed-shallow-mse" if model_name == "shallow" else "seed-cnn")
    split = prepare_data(recipe, data)
    train_images, train_labels = split.train_images, split.train_labels
    test_images, test_labels = split.validation_images, split.validation_labels
    keras.utils.set_random_seed(0)
    model = build_model(model_name)
    optimizer = keras.optimizers.SGD(0.01) if model_name == "shallow" else keras.optimizers.Adam(0.001)
    model.compile(optimizer=optimizer, loss=recipe.loss, metrics=["accuracy"])  # Keras defaults otherwise
    timer = EpochTimer()
    model.fit(train_images, train_labels, batch_size=128, epochs=epochs, validation_data=(test_images, test_labels),
              callbacks=[timer], verbose=0)
    return float(np.median(timer.seconds[1:]))


def digits_run(preset: str, data, runs_dir: Path, **overrides) -> dict:
    run = load_run(train(with_overrides(get_preset(preset), **overrides), data, runs_dir, verbose=0))
    return {"metrics": run.metrics, "history": run.history, "config": run.config}


def whole_digits_run(runs_dir: Path) -> tuple[float, str]:
    """Wall seconds of `digits run` in a fresh process (start-up, data, training, evaluation, report)."""
    command = [sys.executable, "-m", "digits", "run", "--runs-dir", str(runs_dir)]
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - started
    if finished.returncode != 0:
        raise SystemExit(f"digits run failed:\n{finished.stderr[-2000:]}")
    return seconds, finished.stdout


def gflops(images_per_second: float) -> float:
    return images_per_second * CNN_TRAINING_FLOP_PER_IMAGE / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="skip the exact recipes and the whole `digits run`")
    parser.add_argument("--epochs", type=int, default=3, help="reference epochs measured per model (default 3)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    if args.epochs < 2:
        raise SystemExit("--epochs must be at least 2: the first epoch includes tracing and is left out.")

    data = load_mnist()
    train_count = len(data.train_images)
    runs_dir = Path(tempfile.mkdtemp(prefix="digits-study-speed-"))
    print(f"Runs go to {runs_dir}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}", flush=True)

    reference = {name: reference_epoch_seconds(name, data, args.epochs) for name in ("shallow", "cnn")}
    print(f"reference s/epoch: {reference}", flush=True)
    fast = {name: digits_run(name, data, runs_dir) for name in ("quick-shallow", "quick-cnn", "quick-shallow-best")}
    exact = {}
    if not args.quick:
        exact = {name: digits_run(name, data, runs_dir, epochs=args.epochs) for name in ("seed-shallow-mse", "seed-cnn")}

    rows = []
    for model_name, preset in (("shallow", "quick-shallow"), ("cnn", "quick-cnn")):
        target = STUDY_ACCURACY[model_name]
        reference_seconds = reference[model_name] * REFERENCE_EPOCHS[model_name]
        metrics = fast[preset]["metrics"]
        reached = metrics["target_accuracy"]
        seconds = reached["seconds"] if reached["reached"] else metrics["training_seconds"]
        accuracy = fast[preset]["history"]["val_accuracy"][-1]
        note = f"epoch {metrics['epochs']}" + ("" if reached["reached"] else ", target NOT reached")
        rows.append([f"{model_name} to {target:.2%} ({preset})", reference_seconds, seconds, f"{accuracy:.2%}", note])
    best = fast["quick-shallow-best"]["metrics"]
    rows.append(["shallow at its best (quick-shallow-best)", None, best["training_seconds"],
                 f"{best['validation_accuracy']:.2%}", f"{best['epochs']} epochs"])
    for preset, model_name in (("seed-shallow-mse", "shallow"), ("seed-cnn", "cnn")):
        if preset in exact:
            per_epoch = float(np.median(exact[preset]["history"]["seconds"][1:]))
            rows.append([f"{preset}, exact math, per epoch", reference[model_name], per_epoch, "same recipe",
                         f"steps_per_execution {exact[preset]['config']['steps_per_execution']}, "
                         f"jit_compile {exact[preset]['config']['jit_compile']}"])

    cnn = fast["quick-cnn"]
    cnn_epoch_seconds = float(np.median(cnn["history"]["seconds"][1:])) if len(cnn["history"]["seconds"]) > 1 else None
    throughput = {"reference fp32 (incl. validation)": gflops(train_count / reference["cnn"])}
    if cnn_epoch_seconds:
        throughput[f"quick-cnn {cnn['config']['precision']} (incl. validation)"] = gflops(train_count / cnn_epoch_seconds)
    if "seed-cnn" in exact:
        throughput["seed-cnn fp32 (incl. validation)"] = gflops(train_count / float(np.median(exact["seed-cnn"]["history"]["seconds"][1:])))

    if not args.quick:
        study_reference = sum(reference[name] * REFERENCE_EPOCHS[name] for name in reference)
        seconds, output = whole_digits_run(runs_dir)
        accuracies = " / ".join(f"{match[0]} {match[1]} %" for match in
                                re.findall(r"^(quick-\S+)\s+(\d+\.\d+) %", output, flags=re.MULTILINE))
        rows.append(["whole study: `digits run` wall (start-up, training, evaluation, report)", study_reference,
                     seconds, accuracies, "reference: training only"])

    print(f"\nload average at the end {os.getloadavg()[0]:.1f}\n")
    print("| workload | reference | digits | ratio | accuracy reached | note |")
    print("|---|---:|---:|---:|---|---|")
    for name, reference_seconds, seconds, accuracy, note in rows:
        ratio = f"{reference_seconds / seconds:.1f}×" if reference_seconds else "—"
        shown = f"{reference_seconds:.1f} s" if reference_seconds else "—"
        print(f"| {name} | {shown} | {seconds:.1f} s | {ratio} | {accuracy} | {note} |")
    print("\nCNN training throughput (analytic: 14.6 MFLOP per training image; per-epoch times include validation):")
    for name, value in throughput.items():
        print(f"  {name}: {value:.0f} GFLOP/s")
    if not args.quick:
        print(f"\n`digits run` printed:\n{output}")
    if args.json:
        args.json.write_text(json.dumps({"reference_epoch_seconds": reference, "rows": rows, "gflops": throughput},
                                        indent=2, default=str))


if __name__ == "__main__":
    main()
