"""Recipes and presets: the study's exact settings, overrides, and one-line errors for bad names."""

from __future__ import annotations

import json
import math

import pydantic
import pytest

from conftest import run_digits
from digits.errors import DigitsError
from digits.training.presets import PRESETS, get_preset
from digits.training.recipes import Recipe, with_overrides


@pytest.mark.parametrize(
    "name, expected",
    [
        ("seed-shallow-mse", dict(model="shallow", loss="mse", optimizer="sgd", learning_rate=0.01, batch_size=128,
                                  epochs=500)),
        ("seed-shallow-poisson", dict(model="shallow", loss="poisson", optimizer="adadelta", learning_rate=0.001,
                                      batch_size=128, epochs=500)),
        ("seed-cnn", dict(model="cnn", loss="categorical_crossentropy", optimizer="adam", learning_rate=0.001,
                          batch_size=128, epochs=15)),
    ],
)
def test_seed_presets_are_the_study_exactly(name, expected):
    recipe = get_preset(name)
    assert {field: getattr(recipe, field) for field in expected} == expected
    assert (recipe.momentum, recipe.validation, recipe.train_limit, recipe.test_limit) == (0.0, "test", None, None)
    # Faster, but the same math: no schedule, smoothing, augmentation, bfloat16 or early stop.
    assert (recipe.schedule, recipe.label_smoothing, recipe.augment_shift, recipe.precision, recipe.nesterov,
            recipe.target_accuracy) == ("constant", 0.0, 0, "float32", False, None)
    assert recipe.jit_compile == (True if recipe.model == "shallow" else "auto")  # XLA is 13x slower for the CNN
    assert recipe.preset == name
    assert PRESETS[name].study_result


def test_quick_presets_keep_each_study_recipes_model_loss_and_optimizer():
    # The study's two shallow configurations are retold faster, never swapped for another loss or optimizer.
    for quick, seed in (("quick-shallow-mse", "seed-shallow-mse"), ("quick-shallow-poisson", "seed-shallow-poisson"),
                        ("quick-cnn", "seed-cnn")):
        fast, study = get_preset(quick), get_preset(seed)
        assert (fast.model, fast.loss, fast.optimizer) == (study.model, study.loss, study.optimizer)
        assert PRESETS[quick].study_recipe == seed
        assert "study" in PRESETS[quick].description  # says what differs from the study
    assert get_preset("quick-shallow").model == "shallow"
    # Enough epochs for learning curves that can show a trend.
    assert all(get_preset(name).epochs >= 8 for name in ("quick-shallow-mse", "quick-shallow-poisson", "quick-shallow"))


def test_no_recipe_digits_run_trains_stops_on_the_test_set():
    from digits.study import EXACT_PRESETS, QUICK_PRESETS

    assert set(EXACT_PRESETS) == {"seed-shallow-mse", "seed-shallow-poisson", "seed-cnn"}
    assert {"quick-shallow-mse", "quick-shallow-poisson", "quick-cnn"} <= set(QUICK_PRESETS)
    for name in (*QUICK_PRESETS, *EXACT_PRESETS):
        assert get_preset(name).target_accuracy is None, name
    # No preset at all stops on a target: a target is something a user asks for.
    assert all(preset.recipe.target_accuracy is None for preset in PRESETS.values())


def test_recipes_are_frozen_and_hashable():
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        get_preset("seed-cnn").epochs = 1
    assert get_preset("seed-cnn") == with_overrides(get_preset("seed-cnn"), epochs=15)
    assert len({get_preset("seed-cnn"), with_overrides(get_preset("seed-cnn"), epochs=15)}) == 1
    assert get_preset("seed-cnn") != with_overrides(get_preset("seed-cnn"), epochs=14)


def test_a_recipe_written_before_recipes_were_declared_models_loads_equal():
    # The shipped run folder's config.json was written when Recipe was a dataclass: its `recipe` key must give
    # back the very preset, and today's recipes must write the same JSON.
    from digits.inference.classifier import PRETRAINED_DIR

    stored = json.loads((PRETRAINED_DIR / "config.json").read_text())["recipe"]
    assert Recipe(**stored) == get_preset("pretrained")
    assert json.dumps(get_preset("pretrained").model_dump()) == json.dumps(stored)
    # Run folders written before Adam's betas and the training loop were settings trained with Keras's default
    # betas and fit(), which they load as.
    older = {name: value for name, value in stored.items() if name not in ("beta_1", "beta_2", "training_loop")}
    assert (Recipe(**older).beta_1, Recipe(**older).beta_2, Recipe(**older).training_loop) == (0.9, 0.999, "fit")
    assert Recipe(**older) == get_preset("pretrained")


def test_overrides_replace_only_what_is_given():
    recipe = with_overrides(get_preset("seed-cnn"), epochs=2, batch_size=None, seed=7, validation="holdout")
    assert (recipe.epochs, recipe.batch_size, recipe.seed, recipe.validation) == (2, 128, 7, "holdout")
    assert get_preset("seed-cnn").epochs == 15  # the preset itself is untouched


def test_switching_optimizer_takes_its_keras_default_learning_rate():
    sgd = get_preset("seed-shallow-mse")
    assert with_overrides(sgd, optimizer="adam").learning_rate == 0.001
    assert with_overrides(sgd, optimizer="adam", learning_rate=0.005).learning_rate == 0.005
    assert with_overrides(sgd, optimizer="sgd").learning_rate == 0.01


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(loss="hinge"), "Unknown loss 'hinge'; choose one of: categorical_crossentropy, mse, poisson."),
        (dict(optimizer="lbfgs"), "Unknown optimizer 'lbfgs'; choose one of: sgd, adam, adadelta, rmsprop."),
        (dict(validation="train"), "Unknown validation 'train'; choose one of: test, holdout, none."),
        (dict(epochs=0), "`epochs` must be between 1 and 100000, not 0."),
        (dict(batch_size=-5), "`batch_size` must be between 1 and 60000, not -5."),
        (dict(learning_rate=0.0), "`learning_rate` must be above 0 and at most 1000, not 0.0."),
        (dict(train_limit=0), "`train_limit` must be between 1 and 60000, not 0."),
        # Issue 24: every number has an upper bound too (a batch of 2**63 was a segmentation fault).
        (dict(batch_size=2**63 - 1), "`batch_size` must be between 1 and 60000, not 9223372036854775807."),
        (dict(seed=2**40), "`seed` must be between 0 and 4294967295, not 1099511627776."),
        (dict(epochs=10**9), "`epochs` must be between 1 and 100000, not 1000000000."),
        (dict(steps_per_execution=2**62),
         "`steps_per_execution` must be between 1 and 60000, not 4611686018427387904."),
        (dict(learning_rate=math.nan), "`learning_rate` must be a finite number, not nan."),
        (dict(learning_rate=math.inf), "`learning_rate` must be a finite number, not inf."),
        (dict(momentum=1.0), "`momentum` must be at least 0 and below 1, not 1.0."),
        (dict(augment_rotation=90.0), "`augment_rotation` must be between 0 and 45 degrees, not 90.0."),
        (dict(target_accuracy=99), "`target_accuracy` must be between 0 and 1 (a fraction: 0.99 for 99 %), not 99."),
        (dict(epochs=2.5), "`epochs` must be a whole number, not 2.5."),
        (dict(batch_size=True), "`batch_size` must be a number, not True."),
        (dict(nesterov="yes"), "`nesterov` must be true or false, not 'yes'."),
        (dict(jit_compile="sometimes"), "Unknown jit_compile 'sometimes'; choose one of: true, false, auto."),
        (dict(epoch=3), "`epoch` is not a recipe setting; did you mean `epochs`?"),
    ],
)
def test_bad_values_get_one_sentence(change, message):
    with pytest.raises(DigitsError) as caught:
        with_overrides(get_preset("seed-cnn"), **change)
    assert str(caught.value) == message


def test_every_recipe_field_is_declared_with_a_description():
    for name, info in Recipe.model_fields.items():
        assert info.description and info.description.endswith("."), name


def test_train_help_is_generated_from_the_recipe_fields(capsys):
    from digits.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    shown = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for name in Recipe.model_fields:
        if name != "preset":
            assert "--" + name.replace("_", "-") in shown, name
    # A description, its choices and its range, as the Recipe declares them.
    assert " ".join(Recipe.model_fields["augment_rotation"].description.split()) in shown
    assert "one of sgd, adam, adadelta, rmsprop" in shown and "between 0 and 8 pixels" in shown
    assert "--no-nesterov" in shown and "--jit-compile auto|true|false" in shown


@pytest.mark.parametrize("flags, message", [
    (["--learning-rate", "nan"], "digits: error: --learning-rate must be a finite number, not nan."),
    (["--learning-rate", "inf"], "digits: error: --learning-rate must be a finite number, not inf."),
    (["--augment-rotation", "90"], "digits: error: --augment-rotation must be between 0 and 45 degrees, not 90.0."),
    (["--epochs", "0"], "digits: error: --epochs must be between 1 and 100000, not 0."),
    (["--batch-size", "9223372036854775807"],
     "digits: error: --batch-size must be between 1 and 60000, not 9223372036854775807."),
    (["--seed", "1099511627776"], "digits: error: --seed must be between 0 and 4294967295, not 1099511627776."),
    (["--beta-1", "1.5"], "digits: error: --beta-1 must be at least 0 and below 1, not 1.5."),
])
def test_a_training_flag_out_of_range_is_one_sentence_and_exit_1(flags, message, capsys, tmp_path):
    from digits.cli import main

    assert main(["train", "quick-cnn", *flags, "--runs-dir", str(tmp_path / "runs")]) == 1
    assert capsys.readouterr().err.strip() == message
    assert not (tmp_path / "runs").exists()  # Refused before any work: no run folder, not even an empty one.


def test_unknown_preset_lists_the_presets():
    presets = "seed-shallow-mse, seed-shallow-poisson, seed-cnn, quick-shallow-mse, quick-shallow-poisson"
    with pytest.raises(DigitsError, match=presets):
        get_preset("seed-resnet")


def test_a_recipe_naming_an_unknown_model_is_refused_at_once_with_the_known_ones():
    known = "shallow, cnn, cnn-bn, cnn-speedrun"
    with pytest.raises(DigitsError, match=rf"^Unknown model 'resnet'; choose one of: {known}\.$"):
        Recipe(model="resnet", loss="mse", optimizer="sgd", learning_rate=0.01, epochs=1)


@pytest.mark.parametrize(
    "arguments, names",
    [
        (["train", "seed-resnet"], "quick-cnn"),
        (["train", "seed-cnn", "--loss", "hinge"], "categorical_crossentropy, mse, poisson"),
        (["train", "seed-cnn", "--optimizer", "lbfgs"], "sgd, adam, adadelta, rmsprop"),
    ],
)
def test_train_command_rejects_unknown_names_in_one_line(arguments, names):
    result = run_digits(*arguments)
    assert result.returncode == 1
    assert result.stderr.startswith("digits: error: Unknown ")
    assert names in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_presets_command_lists_each_preset_with_the_study_result():
    result = run_digits("presets")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == list(PRESETS)
    assert "90.34 %" in lines[0] and "82 %" in lines[1] and "99.28 %" in lines[2]
