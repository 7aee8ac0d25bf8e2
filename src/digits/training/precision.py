"""float32 or bfloat16: chosen by measuring both on this CPU, once per CPU model, not by reading its flags.

bfloat16 pays only on some CPUs. A plain Keras loop over the study's CNN ran an epoch in 4.3 s in bfloat16
against 7.8 s in float32 on a Xeon with AMX, but 14–21 s against 13 s on a Xeon that lists `avx512_bf16` and no
AMX. So `precision="auto"` times a few training steps of the model in each precision the first time it meets a
CPU model, keeps the answer in the user's cache (`precision.json`), and picks bfloat16 only when it is clearly
faster. A CPU without native bfloat16 (neither `avx512_bf16` nor `amx_bf16` in /proc/cpuinfo) is not measured:
there, bfloat16 is emulated and always slower.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

# bfloat16 must save at least this fraction of a training step to be chosen: a smaller gain is within the
# noise of a short measurement on a shared machine, and bfloat16 costs some reproducibility.
REQUIRED_SAVING = 0.10
# A measurement: a batch of this many images, a few warm-up steps, then rounds of steps in each precision in
# turn, so a slow spell on a shared machine hits both; the fastest round of each is compared.
BATCH_SIZE = 128
WARMUP_STEPS = 2
ROUNDS = 3
STEPS_PER_ROUND = 2
CACHE_FILE_NAME = "precision.json"


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a run uses and why; config.json records all of it."""

    precision: str
    """"float32" or "mixed_bfloat16"."""
    reason: str
    """One sentence: requested, no native bfloat16, or measured (with the step times)."""
    cpu: str
    """The CPU model, as /proc/cpuinfo names it."""
    float32_step_ms: float | None = None
    """The fastest measured training step in float32, when it was measured."""
    bfloat16_step_ms: float | None = None
    """The same in bfloat16."""
    cached: bool = False
    """Whether the measurement came from the user's cache instead of being taken now."""

    def to_dict(self) -> dict:
        return asdict(self)


def cpu_description(cpuinfo: str | None = None) -> tuple[str, set[str]]:
    """The CPU's model name and flags from /proc/cpuinfo (("unknown", {}) where there is none)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:  # Not Linux.
            return "unknown", set()
    name, flags = "unknown", set[str]()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and name == "unknown":
            name = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return name, flags


def native_bf16(flags: set[str]) -> bool:
    """Whether the CPU computes bfloat16 natively (AVX-512 BF16 or AMX)."""
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cache_file() -> Path:
    """Where measured choices are kept: beside the MNIST cache (`$DIGITS_CACHE_DIR`, else ~/.cache/digits)."""
    if os.environ.get("DIGITS_CACHE_DIR"):
        return Path(os.environ["DIGITS_CACHE_DIR"]).expanduser() / CACHE_FILE_NAME
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "digits" / CACHE_FILE_NAME


def choose_precision(requested: str, model_name: str, *, cpuinfo: str | None = None, cache: Path | None = None,
                     measure: Callable[[str], tuple[float, float]] | None = None) -> PrecisionChoice:
    """The precision to train `model_name` in: `requested` unless it is "auto", which measures (see the module).

    `measure(model_name)` returns the (float32, bfloat16) seconds of a training step; by default
    `measure_step_seconds`, which builds and trains the model on random images for a few seconds.
    """
    cpu, flags = cpu_description(cpuinfo)
    if requested != "auto":
        return PrecisionChoice(requested, f"{requested} was asked for.", cpu)
    if not native_bf16(flags):
        return PrecisionChoice("float32", "float32: the CPU has no native bfloat16 (neither avx512_bf16 nor "
                               "amx_bf16), so bfloat16 would be emulated and slower.", cpu)
    cache = cache or cache_file()
    key = f"{model_name} | {cpu} | {'amx' if 'amx_bf16' in flags else 'avx512_bf16'} | {_versions()}"
    known = _read_cache(cache).get(key)
    cached = known is not None
    if known is None:
        float32_seconds, bfloat16_seconds = (measure or measure_step_seconds)(model_name)
        known = {"float32_step_ms": round(1000 * float32_seconds, 2),
                 "bfloat16_step_ms": round(1000 * bfloat16_seconds, 2)}
        _write_cache(cache, key, known)
    float32_ms, bfloat16_ms = float(known["float32_step_ms"]), float(known["bfloat16_step_ms"])
    pays = bfloat16_ms <= (1 - REQUIRED_SAVING) * float32_ms
    precision = "mixed_bfloat16" if pays else "float32"
    verb = "pays" if pays else f"does not pay (it must save at least {REQUIRED_SAVING:.0%})"
    reason = (f"{'bfloat16' if pays else 'float32'}: on this CPU a {model_name} training step of {BATCH_SIZE} "
              f"images took {bfloat16_ms:.1f} ms in bfloat16 against {float32_ms:.1f} ms in float32, so bfloat16 "
              f"{verb}{' (measured earlier, from ' + str(cache) + ')' if cached else ''}.")
    return PrecisionChoice(precision, reason, cpu, float32_ms, bfloat16_ms, cached)


def measure_step_seconds(model_name: str) -> tuple[float, float]:
    """The fastest training step of `model_name` on random images, in float32 and in bfloat16, in seconds."""
    import keras

    from digits.training.models import build_model

    rng = np.random.default_rng(0)
    images = rng.random((BATCH_SIZE, 28, 28, 1), dtype=np.float32)
    labels = np.eye(10, dtype="float32")[rng.integers(0, 10, BATCH_SIZE)]
    steps = {}
    for precision in ("float32", "mixed_bfloat16"):
        model = build_model(model_name, precision=precision)
        model.compile(optimizer=keras.optimizers.Adam(), loss="categorical_crossentropy")
        for _ in range(WARMUP_STEPS):  # tracing and oneDNN's kernel choice happen here
            model.train_on_batch(images, labels)
        steps[precision] = model
    rounds: dict[str, list[float]] = {precision: [] for precision in steps}
    for _ in range(ROUNDS):
        for precision, model in steps.items():
            started = time.perf_counter()
            for _ in range(STEPS_PER_ROUND):
                model.train_on_batch(images, labels)
            rounds[precision].append((time.perf_counter() - started) / STEPS_PER_ROUND)
    return min(rounds["float32"]), min(rounds["mixed_bfloat16"])


def _versions() -> str:
    import importlib.metadata

    names = ("keras", "tensorflow")
    versions = []
    for name in names:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return ", ".join(versions)


def _read_cache(cache: Path) -> dict:
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):  # none yet, unreadable or damaged: measure again
        return {}
    if not isinstance(known, dict):
        return {}
    return {key: value for key, value in known.items() if isinstance(value, dict)
            and all(isinstance(value.get(name), int | float) and value[name] > 0
                    for name in ("float32_step_ms", "bfloat16_step_ms"))}


def _write_cache(cache: Path, key: str, value: dict) -> None:
    known = {**_read_cache(cache), key: value}
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_name(f"{cache.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps(known, indent=2) + "\n")
        partial.replace(cache)
    except OSError:  # A read-only home only costs a measurement next time.
        pass
