"""Make a finished, evaluated run of `digits train pretrained` the model that ships in src/digits/pretrained/.

    .venv/bin/digits train pretrained                  # writes runs/<time>-pretrained/
    .venv/bin/digits evaluate runs/<time>-pretrained   # scores it on the test set, once
    .venv/bin/python scripts/ship_pretrained.py runs/<time>-pretrained

Copies the run's config.json, history.csv and metrics.json and its evaluation/evaluation.json, and saves its
model without the optimizer's state: the same weights in a third of the size (Adam keeps two numbers per
weight, which nobody needs to read digits). Refuses a run of another preset, an unfinished or unevaluated one.
Removes the previous model's not-a-digit detector and thresholds (calibration.json), fitted to that model.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from digits.errors import DigitsError
from digits.inference.classifier import PRETRAINED_CALIBRATION, PRETRAINED_DIR, PRETRAINED_EVALUATION, PRETRAINED_MODEL
from digits.inference.not_a_digit import DETECTOR_FILE
from digits.training.runs import CONFIG_FILE, HISTORY_FILE, METRICS_FILE, load_run


def ship(run_dir: Path) -> None:
    run = load_run(run_dir)  # Refuses a missing, damaged or unfinished run in one sentence.
    if run.config.get("preset") != "pretrained" or run.config.get("recipe", {}).get("validation") != "none":
        raise DigitsError(f"{run_dir} is not a run of `digits train pretrained`; train one with that command.")
    evaluation = run.path / "evaluation" / "evaluation.json"
    if not evaluation.is_file():
        raise DigitsError(f"{run_dir} has not been evaluated; run `digits evaluate {run_dir}` first.")
    import keras

    import digits.training.augment  # noqa: F401  Registers the augmentation layer the model holds.

    # Loaded uncompiled, so saving it again leaves the optimizer and its state out.
    model = keras.saving.load_model(run.model_path, compile=False)
    PRETRAINED_EVALUATION.parent.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG_FILE, HISTORY_FILE, METRICS_FILE):
        shutil.copyfile(run.path / name, PRETRAINED_DIR / name)
    shutil.copyfile(evaluation, PRETRAINED_EVALUATION)
    model.save(PRETRAINED_MODEL)
    # The not-a-digit detector and thresholds were fitted to the previous model's features and probabilities.
    for stale in (PRETRAINED_DIR / DETECTOR_FILE, PRETRAINED_CALIBRATION):
        stale.unlink(missing_ok=True)
    print(f"{PRETRAINED_DIR}: the model of {run.path.name} ({PRETRAINED_MODEL.stat().st_size:,} bytes); now fit its "
          "not-a-digit detector (benchmarks/not_a_digit.py --write) and export it again")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run folder of `digits train pretrained`, evaluated")
    try:
        ship(parser.parse_args().run)
    except DigitsError as error:
        print(f"ship_pretrained: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
