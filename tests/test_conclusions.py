"""The study's conclusions: time to reach the study's accuracy read from the history, why training ended, and the
study's two shallow configurations compared against the study's own figures."""


import pytest

from digits.errors import DigitsError
from digits.evaluation.comparison import ModelSummary, compare
from digits.evaluation.conclusions import configurations_sentence, first_reaching, model_conclusion, stopping_words
from digits.training.presets import get_preset


def config(preset, **recipe_changes):
    return {"preset": preset, "recipe": {**get_preset(preset).model_dump(), **recipe_changes}}


def summary(name, accuracy, count=10_000):
    return ModelSummary(name=name, accuracy=accuracy, loss=0.1, mistakes=round((1 - accuracy) * count), count=count)


def test_time_to_reach_is_read_from_the_history_not_used_to_stop():
    history = {"val_accuracy": [0.95, 0.98, float("nan"), 0.9930, 0.9940], "seconds": [8.0, 7.0, 7.0, 7.5, 7.0]}
    reached = first_reaching(history, 0.9928)
    assert (reached.epoch, reached.seconds) == (4, pytest.approx(29.5))  # the sum of epochs 1-4
    assert first_reaching(history, 0.999) is None
    # float32 accuracy 0.99279999 counts as the study's 99.28 %.
    assert first_reaching({"val_accuracy": [0.99279999], "seconds": [1.0]}, 0.9928).epoch == 1


def test_the_conclusion_says_why_training_ended_and_sets_the_study_beside_it():
    history = {"val_accuracy": [0.985, 0.991, 0.9929, 0.9931, 0.9931], "seconds": [9.0, 8.0, 8.0, 8.0, 8.0]}
    metrics = {"status": "complete", "epochs": 5}
    line = model_conclusion("quick-cnn", summary("quick-cnn", 0.9931), config("quick-cnn", epochs=5), metrics,
                            history)
    assert line.startswith("quick-cnn: 99.31 % test accuracy (its 5 planned epochs)")
    assert "99.28 % after 15 epochs" in line and "+0.03 points" in line
    assert "first reached the study's 99.28 % at epoch 3, after 25.0 s" in line
    # Scored on the holdout, it claims no time on the test set.
    holdout = model_conclusion("quick-cnn", summary("quick-cnn", 0.9931), config("quick-cnn", validation="holdout",
                                                                                 epochs=5),
                               metrics, history)
    assert "not measured" in holdout and "first reached" not in holdout
    assert stopping_words({"status": "interrupted", "epochs": 2}, {"epochs": 4}) == "interrupted after 2 of 4 epochs"
    assert "within what the test images can resolve" in line  # 0.03 points is noise on 10,000 images


@pytest.mark.parametrize("mse_accuracy, poisson_accuracy, words", [
    (0.9710, 0.9630, "the gap shrinks from 8.3 to 0.80 points"),
    (0.9600, 0.9700, "the study's conclusion reverses"),
    (0.9500, 0.8500, "the study's conclusion holds"),
])
def test_the_two_configurations_are_compared_with_the_studys_finding(mse_accuracy, poisson_accuracy, words):
    sentence = configurations_sentence([
        (summary("quick-shallow-mse", mse_accuracy), config("quick-shallow-mse")),
        (summary("quick-shallow-poisson", poisson_accuracy), config("quick-shallow-poisson")),
        (summary("quick-cnn", 0.993), config("quick-cnn")),
    ])
    better = "MSE + SGD" if mse_accuracy > poisson_accuracy else "Poisson + Adadelta"
    assert sentence.startswith(f"Of the study's two configurations of the shallow network, {better}")
    assert "90.34 % after 500 epochs" in sentence and "about 82 % after 500 epochs" in sentence
    assert words in sentence
    # The learning-rate explanation is given only where tuning changed the study's conclusion.
    assert ("a thousandth of the 1.0" in sentence) == (words != "the study's conclusion holds")


def test_the_studys_own_recipes_are_called_a_reproduction():
    sentence = configurations_sentence([(summary("seed-shallow-mse", 0.9022), config("seed-shallow-mse")),
                                        (summary("seed-shallow-poisson", 0.8237), config("seed-shallow-poisson"))])
    assert "this is a reproduction" in sentence and "7.85 points here against 8.3 there" in sentence
    assert configurations_sentence([(summary("quick-shallow", 0.97), config("quick-shallow"))]) is None


def test_comparing_models_tested_on_different_images_is_refused():
    with pytest.raises(DigitsError, match="different numbers of test images"):
        compare([summary("a", 0.99), summary("b", 0.98, count=500)])
    # Two standard errors of the difference of 99 % and 98 % on 10,000 images each: about a third of a point.
    assert compare([summary("a", 0.99), summary("b", 0.98)]).noise_points == pytest.approx(0.344, abs=0.001)
