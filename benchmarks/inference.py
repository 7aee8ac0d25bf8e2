"""Keras/TensorFlow against ONNX Runtime for the shipped model: server start-up, memory, latency, throughput.

Each runtime is measured in its own fresh processes, one after the other:
- start-up: `digits serve --model FILE --port 0` from launch until it prints its address (model loaded,
  listening; the picture-preparing workers may still be starting), and until its first answer to a picture
  (the median of --starts launches); the server process's resident memory (RSS) after answering 20 pictures;
- model time: one picture per call through `Classifier.classify` (what the server and `digits predict` call: the
  probabilities, the not-a-digit detector's digit score and the verdict), median of 500 calls, with one inference
  thread as the server uses;
- throughput: the 10,000 MNIST test images through `Classifier.classify` (batches of 1,000).
Both runtimes run the classifier joined to its detector: Keras reads the shipped run folder (model.keras and
not_a_digit.npz), ONNX Runtime the exported model.onnx, which holds both.

    .venv/bin/python benchmarks/inference.py [--runtime onnx] [--starts 5]

Goals (issue 17): start < 2 s, resident < 300 MB, < 1 ms of model time per picture.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

PRETRAINED = Path(__file__).parents[1] / "src" / "digits" / "pretrained"
MODELS = {"Keras/TensorFlow": PRETRAINED, "ONNX Runtime": PRETRAINED / "model.onnx"}
GOALS = {"start_seconds": 2.0, "resident_mb": 300.0, "model_ms": 1.0}

# Runs in a fresh interpreter per runtime, so neither pays for the other's imports.
MODEL_TIMING = """
import json, sys, time
import numpy as np
from digits.data.mnist import load_mnist
from digits.inference.classifier import load_classifier, runs_on_onnx
from digits.serving.process import use_one_thread_per_inference
model = sys.argv[1]
if not runs_on_onnx(model):
    use_one_thread_per_inference()
classifier = load_classifier(model, threads=1)
images = load_mnist().test_images
for image in images[:50]:
    classifier.classify(image[np.newaxis])
calls = []
for image in images[:500]:
    start = time.perf_counter()
    classifier.classify(image[np.newaxis])
    calls.append(time.perf_counter() - start)
batched = load_classifier(model)  # All cores, as `digits predict` and `digits evaluate` use them.
batched.classify(images[:1000])
start = time.perf_counter()
batched.classify(images)
seconds = time.perf_counter() - start
print(json.dumps({"model_ms": 1000 * float(np.median(calls)), "images_per_second": len(images) / seconds,
                  "tensorflow_imported": "tensorflow" in sys.modules}))
"""


def server_figures(model: Path, starts: int) -> dict:
    """Median seconds until `digits serve` prints its address and until it answers its first picture, over
    `starts` launches; the server's resident memory after 20 answers (in the last launch)."""
    from digits.serving.workers import warm_up_png

    start_seconds, first_answer_seconds = [], []
    for _ in range(starts):
        start = time.perf_counter()
        server = subprocess.Popen([sys.executable, "-m", "digits", "serve", "--model", str(model), "--port", "0"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            address = re.search(r"http://127\.0\.0\.1:\d+/", server.stdout.readline())
            start_seconds.append(time.perf_counter() - start)
            if address is None:
                sys.exit(f"inference: digits serve --model {model} did not start")
            for answer in range(20):
                request = urllib.request.Request(address.group() + "predict", data=warm_up_png(),
                                                 headers={"Content-Type": "image/png"})
                urllib.request.urlopen(request, timeout=30).read()
                if answer == 0:
                    first_answer_seconds.append(time.perf_counter() - start)
            resident_kb = psutil.Process(server.pid).memory_info().rss / 1024
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
    return {"start_seconds": statistics.median(start_seconds),
            "first_answer_seconds": statistics.median(first_answer_seconds), "resident_mb": resident_kb / 1024}


def model_figures(model: Path) -> dict:
    result = subprocess.run([sys.executable, "-c", MODEL_TIMING, str(model)], capture_output=True, text=True,
                            check=False, timeout=600)
    if result.returncode != 0:
        sys.exit(f"inference: timing {model} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", choices=["both", "onnx"], default="both",
                        help="measure both runtimes (default) or ONNX Runtime only")
    parser.add_argument("--starts", type=int, default=3, help="server launches whose median start-up is shown")
    arguments = parser.parse_args()
    models = MODELS if arguments.runtime == "both" else {"ONNX Runtime": MODELS["ONNX Runtime"]}
    rows = {name: {**server_figures(model, arguments.starts), **model_figures(model)} for name, model in models.items()}
    print(f"shipped model, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"{'':28}" + "".join(f"{name:>20}" for name in rows) + f"{'goal':>10}")
    lines = [("server start-up (s)", "start_seconds", "{:.2f}"),
             ("first answer after launch (s)", "first_answer_seconds", "{:.2f}"),
             ("server resident memory (MB)", "resident_mb", "{:.0f}"),
             ("model time, 1 picture (ms)", "model_ms", "{:.3f}"),
             ("throughput (images/s)", "images_per_second", "{:,.0f}")]
    for label, key, form in lines:
        goal = GOALS.get(key)
        print(f"{label:28}" + "".join(f"{form.format(row[key]):>20}" for row in rows.values())
              + (f"{'< ' + str(goal):>10}" if goal else ""))
    print(f"{'TensorFlow imported':28}" + "".join(f"{row['tensorflow_imported']!s:>20}" for row in rows.values()))
    onnx = rows["ONNX Runtime"]
    met = all(onnx[key] < goal for key, goal in GOALS.items())
    print(f"goals for ONNX Runtime: {'met' if met else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
