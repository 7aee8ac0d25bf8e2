"""The study's shallow networks trained one after the other (`digits.training.fit.train`) against together, in
one fit() (`digits.training.together.train_together`): seconds from data in memory to the saved run folders, and
each run's test accuracy, in turns, each side in a fresh process.

    .venv/bin/python benchmarks/shallow_together.py              # the quick presets of `digits run`, 2 rounds
    .venv/bin/python benchmarks/shallow_together.py --exact --epochs 4   # the study's own two, 4 of their epochs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

QUICK = ("quick-shallow-mse", "quick-shallow-poisson", "quick-shallow")
EXACT = ("seed-shallow-mse", "seed-shallow-poisson")


def one_side(side: str, presets: list[str], epochs: int | None) -> dict:
    """Train `presets` alone or together in this process: wall seconds and each run's test accuracy."""
    from digits.data.mnist import load_mnist
    from digits.training.fit import train
    from digits.training.presets import get_preset
    from digits.training.recipes import with_overrides
    from digits.training.together import train_together

    data = load_mnist()
    recipes = [with_overrides(get_preset(name), epochs=epochs) for name in presets]
    runs_dir = tempfile.mkdtemp(prefix="digits-together-")
    started = time.perf_counter()
    if side == "alone":
        runs = [train(recipe, data, runs_dir, verbose=0) for recipe in recipes]
    else:
        runs = train_together(recipes, data, runs_dir, verbose=0)
    return {"seconds": time.perf_counter() - started,
            "accuracy": {run.recipe.preset: run.metrics["validation_accuracy"] for run in runs}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exact", action="store_true", help="the study's own two shallow recipes (XLA)")
    parser.add_argument("--epochs", type=int, help="epochs of each recipe (default: the preset's)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of both sides, in turns (default 2)")
    parser.add_argument("--side", choices=("alone", "together"), help=argparse.SUPPRESS)  # one side, in a child
    args = parser.parse_args()
    presets = list(EXACT if args.exact else QUICK)
    if args.side:
        print(json.dumps(one_side(args.side, presets, args.epochs)))
        return
    if args.rounds < 1 or (args.epochs is not None and args.epochs < 1):
        raise SystemExit("--rounds and --epochs must be at least 1.")
    print(f"{', '.join(presets)}; load average {os.getloadavg()[0]:.1f}", flush=True)
    seconds: dict[str, list[float]] = {"alone": [], "together": []}
    for number in range(1, args.rounds + 1):
        for side in seconds:
            command = [sys.executable, __file__, "--side", side, *(["--exact"] if args.exact else []),
                       *(["--epochs", str(args.epochs)] if args.epochs else [])]
            finished = subprocess.run(command, capture_output=True, text=True, timeout=1800,
                                      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
            if finished.returncode != 0:
                raise SystemExit(f"{side} failed:\n{finished.stderr[-2000:]}")
            result = json.loads(finished.stdout.strip().splitlines()[-1])
            seconds[side].append(result["seconds"])
            accuracies = ", ".join(f"{name} {100 * value:.2f} %" for name, value in result["accuracy"].items())
            print(f"round {number}, {side}: {result['seconds']:.1f} s ({accuracies})", flush=True)
    alone, together = statistics.median(seconds["alone"]), statistics.median(seconds["together"])
    print(f"medians: alone {alone:.1f} s, together {together:.1f} s: {alone / together:.2f}× faster together; "
          f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
