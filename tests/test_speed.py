"""The fast path: one-cycle schedule, bfloat16 detection, stopping at a target accuracy, and what runs record."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from digits.data.mnist import load_mnist
from digits.errors import DigitsError
from digits.training.callbacks import StopAtAccuracy
from digits.training.fit import train
from digits.training.models import build_model
from digits.training.precision import choose_precision, measure_step_seconds
from digits.training.presets import get_preset
from digits.training.recipes import with_overrides
from digits.training.runs import load_model, load_run
from digits.training.schedules import OneCycle

CPUINFO_ZEN4 = "processor : 0\nflags : fpu sse2 avx2 avx512f avx512bw avx512_bf16 avx512_vnni\n"
CPUINFO_SAPPHIRE_RAPIDS = "flags : fpu avx512f amx_bf16 amx_tile amx_int8\n"
CPUINFO_OLDER = "flags : fpu sse2 avx2 avx512f avx512bw avx512_vnni\n"


def test_one_cycle_rises_to_the_peak_then_falls_to_zero():
    schedule = OneCycle.for_run(0.3, total_steps=1000)
    assert schedule.warmup_steps == 200  # 20 % of the steps
    rates = {step: float(schedule(step)) for step in (0, 100, 200, 600, 1000, 1200)}
    assert rates[0] == 0.0
    assert rates[100] == pytest.approx(0.15)
    assert rates[200] == pytest.approx(0.3)  # the peak is the recipe's learning rate
    assert rates[600] == pytest.approx(0.15)
    assert rates[1000] == 0.0 and rates[1200] == 0.0  # never negative past the end


def test_one_cycle_survives_a_run_of_one_step():
    schedule = OneCycle.for_run(0.01, total_steps=1)
    assert 0 < schedule.warmup_steps < schedule.total_steps


def never_measure(model_name):
    raise AssertionError("a CPU without native bfloat16 must not be measured")


def test_auto_precision_is_float32_without_measuring_where_the_cpu_has_no_bfloat16(tmp_path):
    choice = choose_precision("auto", "cnn", cpuinfo=CPUINFO_OLDER, cache=tmp_path / "p.json", measure=never_measure)
    assert choice.precision == "float32" and "no native bfloat16" in choice.reason
    assert not (tmp_path / "p.json").exists()
    # An explicit choice is kept as it is, on any CPU.
    assert choose_precision("float32", "cnn", cpuinfo=CPUINFO_ZEN4, measure=never_measure).precision == "float32"


@pytest.mark.parametrize("cpuinfo", [CPUINFO_ZEN4, CPUINFO_SAPPHIRE_RAPIDS])
@pytest.mark.parametrize("step_seconds, expected", [((0.030, 0.016), "mixed_bfloat16"),  # bfloat16 pays
                                                    ((0.030, 0.029), "float32"),  # a 3 % gain is noise
                                                    ((0.013, 0.018), "float32")])  # slower, as on some Xeons
def test_auto_precision_follows_the_measurement_once_per_cpu(tmp_path, cpuinfo, step_seconds, expected):
    measured = []

    def measure(model_name):
        measured.append(model_name)
        return step_seconds

    cache = tmp_path / "precision.json"
    first = choose_precision("auto", "cnn", cpuinfo=cpuinfo, cache=cache, measure=measure)
    again = choose_precision("auto", "cnn", cpuinfo=cpuinfo, cache=cache, measure=measure)
    assert (first.precision, again.precision) == (expected, expected)
    assert measured == ["cnn"] and (first.cached, again.cached) == (False, True)  # measured once, then remembered
    assert first.float32_step_ms == pytest.approx(1000 * step_seconds[0])
    assert f"{1000 * step_seconds[1]:.1f} ms in bfloat16" in first.reason
    # Another model is measured on its own.
    choose_precision("auto", "cnn-bn", cpuinfo=cpuinfo, cache=cache, measure=measure)
    assert measured == ["cnn", "cnn-bn"]


def test_a_damaged_precision_cache_is_measured_again(tmp_path):
    cache = tmp_path / "precision.json"
    cache.write_text("{not json")
    choice = choose_precision("auto", "cnn", cpuinfo=CPUINFO_ZEN4, cache=cache, measure=lambda name: (0.03, 0.01))
    assert choice.precision == "mixed_bfloat16" and not choice.cached
    assert json.loads(cache.read_text())  # rewritten whole


@pytest.mark.slow
def test_the_step_measurement_times_the_model_it_is_given_in_both_precisions():
    cnn_float32, cnn_bfloat16 = measure_step_seconds("cnn")
    shallow_float32, shallow_bfloat16 = measure_step_seconds("shallow")
    # A CNN step does about 50 times the multiply-adds of a shallow-network step (2.4 M against 0.05 M an image): a
    # timer that timed anything else (an empty step, a cached result, the wrong model) would not see the difference.
    assert shallow_float32 < cnn_float32 / 2 and shallow_bfloat16 < cnn_bfloat16 / 2
    # Measuring leaves Keras's global precision as it found it: models built afterwards are float32.
    assert keras.config.dtype_policy().name == "float32"


def test_mixed_precision_keeps_the_softmax_in_float32_and_resets_the_policy():
    model = build_model("cnn", precision="mixed_bfloat16", shift=2)
    assert model.count_params() == 34_826  # the shift layer has no parameters...
    assert [layer.name for layer in model.layers][0] == "random_shift"  # ...but is one more layer
    assert model.get_layer("random_shift").compute_dtype == "float32"  # it moves the float32 input images
    assert model.get_layer("conv1").compute_dtype == "bfloat16"
    assert model.get_layer("output").compute_dtype == "float32"
    assert keras.config.dtype_policy().name == "float32"  # later models are not affected
    probabilities = np.asarray(model.predict(np.zeros((2, 28, 28, 1), "float32"), verbose=0))
    assert probabilities.dtype == np.float32


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(schedule="cosine"), "Unknown schedule 'cosine'; choose one of: constant, one-cycle."),
        (dict(precision="float16"), "Unknown precision 'float16'; choose one of: float32, mixed_bfloat16, auto."),
        (dict(loss="mse", label_smoothing=0.1), "Label smoothing works with the categorical_crossentropy loss only"),
        (dict(augment_shift=2), "Random-shift augmentation is built into the cnn and cnn-bn models only, not shallow"),
        (dict(target_accuracy=99.0),
         "`target_accuracy` must be between 0 and 1 (a fraction: 0.99 for 99 %), not 99.0."),
    ],
)
def test_bad_fast_path_values_get_one_sentence(change, message):
    with pytest.raises(DigitsError) as caught:
        with_overrides(get_preset("quick-shallow"), **change)
    assert str(caught.value).startswith(message)


def test_the_study_accuracy_counts_as_reached_despite_float32_rounding():
    stopper = StopAtAccuracy(0.9928)
    stopper.set_model(build_model("shallow"))
    stopper.on_epoch_end(0, {"val_accuracy": float(np.float32(9927 / 10_000))})
    assert not stopper.summary()["reached"]
    stopper.on_epoch_end(1, {"val_accuracy": float(np.float32(9928 / 10_000))})  # 0.99279999...
    assert stopper.summary()["reached"] and stopper.summary()["epoch"] == 2


@pytest.fixture(scope="module")
def target_run(tmp_path_factory):
    """A one-cycle run that could train 3 epochs but has target accuracy 0, which the first epoch reaches."""
    recipe = with_overrides(get_preset("quick-shallow"), epochs=3, target_accuracy=0.0, train_limit=1000,
                            test_limit=200)
    return train(recipe, load_mnist(), tmp_path_factory.mktemp("runs"), verbose=0).folder


@pytest.mark.slow
def test_a_reached_target_stops_training_after_that_epoch(target_run):
    run = load_run(target_run)
    assert run.metrics["status"] == "complete" and run.metrics["epochs"] == 1
    assert run.history["epoch"].tolist() == [1]
    target = run.metrics["target_accuracy"]
    assert (target["target"], target["reached"], target["epoch"]) == (0.0, True, 1)
    assert 0 < target["seconds"] <= run.metrics["training_seconds"]


@pytest.mark.slow
def test_config_records_precision_and_steps_per_execution(target_run):
    config = json.loads((target_run / "config.json").read_text())
    assert config["precision"] == "float32" and config["precision_choice"]["precision"] == "float32"
    assert config["steps_per_execution"] == 4  # 1,000 images in batches of 256: the whole epoch in one call
    assert config["jit_compile"] == "auto"  # over 10 epochs XLA's compile costs more than it saves
    assert config["recipe"]["schedule"] == "one-cycle" and config["recipe"]["target_accuracy"] == 0.0


@pytest.mark.slow
def test_a_model_trained_with_one_cycle_reloads_with_its_schedule(target_run):
    model = load_model(load_run(target_run))
    schedule = model.optimizer._learning_rate  # Keras keeps the schedule object here; `learning_rate` is its value
    assert isinstance(schedule, OneCycle) and schedule.peak == pytest.approx(0.5)
    assert model.count_params() == 50_890
