"""Known-answer tests for digits.evaluation.metrics.score: every expected number below was worked out by hand."""

import math

import numpy as np
import pytest

from digits.evaluation.comparison import ModelSummary, compare
from digits.evaluation.metrics import Evaluation, overfitting_verdict, score


def one_hot_probabilities(predicted, confidence):
    """Rows that give `confidence` to the predicted digit and share the rest equally."""
    rows = np.full((len(predicted), 10), 0.0)
    for row, (digit, probability) in enumerate(zip(predicted, confidence, strict=True)):
        rows[row, :] = (1 - probability) / 9
        rows[row, digit] = probability
    return rows


# Ten images: three 4s read as 9 twice, one 7 read as 1, the rest right.
LABELS = np.array([4, 4, 4, 7, 7, 1, 1, 9, 0, 0])
PREDICTED = [9, 9, 4, 1, 7, 1, 1, 9, 0, 0]
CONFIDENCE = [0.6, 0.97, 0.9, 0.8, 0.9, 0.99, 0.99, 0.9, 0.9, 0.9]


def test_hand_made_confusion_accuracy_and_mistakes():
    evaluation = score(LABELS, one_hot_probabilities(PREDICTED, CONFIDENCE))

    assert evaluation.accuracy == pytest.approx(0.7)
    assert evaluation.count == 10
    assert evaluation.mistake_count == 3
    expected = np.zeros((10, 10), dtype=int)
    for actual, predicted in zip(LABELS, PREDICTED, strict=True):
        expected[actual, predicted] += 1
    np.testing.assert_array_equal(evaluation.confusion, expected)
    assert evaluation.confusion[4, 9] == 2 and evaluation.confusion[7, 1] == 1

    # Most confident mistake first: image 1 (97 %), then image 3 (80 %), then image 0 (60 %).
    assert [(m.index, m.actual, m.predicted) for m in evaluation.mistakes] == [(1, 4, 9), (3, 7, 1), (0, 4, 9)]
    assert evaluation.mistakes[0].confidence == pytest.approx(0.97)

    assert [(p.actual, p.predicted, p.count) for p in evaluation.confused_pairs] == [(4, 9, 2), (7, 1, 1)]


def test_per_class_scores_and_loss_by_hand():
    evaluation = score(LABELS, one_hot_probabilities(PREDICTED, CONFIDENCE))
    scores = {row.digit: row for row in evaluation.per_class}

    # Digit 9: predicted 3 times, right once -> precision 1/3; one 9 in the set, found -> recall 1.
    assert scores[9].precision == pytest.approx(1 / 3)
    assert scores[9].recall == pytest.approx(1.0)
    assert scores[9].f1 == pytest.approx(0.5)
    # Digit 4: predicted once, right -> precision 1; three 4s, one found -> recall 1/3.
    assert scores[4].recall == pytest.approx(1 / 3) and scores[4].support == 3
    assert scores[1].precision == pytest.approx(2 / 3)
    assert scores[5].support == 0 and scores[5].f1 == 0.0

    # Loss is the mean of -log(probability of the true digit).
    true_probability = [0.4 / 9, 0.03 / 9, 0.9, 0.2 / 9, 0.9, 0.99, 0.99, 0.9, 0.9, 0.9]
    assert evaluation.loss == pytest.approx(-np.mean(np.log(true_probability)))


def test_scores_match_scikit_learn_even_for_a_digit_never_predicted_or_never_present():
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 8, 300)  # digits 8 and 9 never occur
    probabilities = rng.random((300, 10))
    probabilities[:, 7] = 0  # and 7 is never predicted
    evaluation = score(labels, probabilities)
    predicted = probabilities.argmax(axis=1)
    assert (evaluation.confusion == confusion_matrix(labels, predicted, labels=list(range(10)))).all()
    precision, recall, f1, support = precision_recall_fscore_support(labels, predicted, labels=list(range(10)),
                                                                     zero_division=0)
    rows = evaluation.per_class
    assert np.allclose([row.precision for row in rows], precision) and np.allclose([row.recall for row in rows], recall)
    assert np.allclose([row.f1 for row in rows], f1) and [row.support for row in rows] == list(support)
    assert rows[7].precision == 0 and rows[9].recall == 0 and rows[9].f1 == 0


def test_perfect_predictions_have_no_mistakes_and_tiny_loss():
    labels = np.arange(10)
    evaluation = score(labels, np.eye(10))

    assert evaluation.accuracy == 1.0
    assert evaluation.mistakes == [] and evaluation.confused_pairs == []
    assert evaluation.loss == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_array_equal(evaluation.confusion, np.eye(10, dtype=int))


def test_evaluation_survives_a_json_round_trip():
    evaluation = score(LABELS, one_hot_probabilities(PREDICTED, CONFIDENCE))
    again = Evaluation.from_dict(evaluation.to_dict())

    assert again.accuracy == evaluation.accuracy and again.mistakes == evaluation.mistakes
    np.testing.assert_array_equal(again.confusion, evaluation.confusion)
    assert again.per_class == evaluation.per_class


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError):
        score(np.array([1, 2]), np.ones((3, 10)) / 10)
    with pytest.raises(ValueError):
        score(np.array([1, 2]), np.ones((2, 9)) / 9)


def history(loss, accuracy, validation_loss, validation_accuracy):
    return {"epoch": np.arange(1, len(loss) + 1), "loss": np.array(loss), "accuracy": np.array(accuracy),
            "val_loss": np.array(validation_loss), "val_accuracy": np.array(validation_accuracy)}


def test_a_curve_that_obviously_overfits():
    epochs = 15
    training_loss = np.linspace(0.5, 0.01, epochs)
    # Validation loss falls to 0.05 at epoch 5, then climbs to 0.15.
    validation_loss = np.concatenate([np.linspace(0.4, 0.05, 5), np.linspace(0.06, 0.15, 10)])
    verdict = overfitting_verdict(history(training_loss, np.linspace(0.9, 1.0, epochs), validation_loss,
                                          np.linspace(0.88, 0.97, epochs)))

    assert verdict.level == "clear"
    assert verdict.turned_upward
    assert verdict.best_epoch == 5
    assert verdict.best_validation_loss == pytest.approx(0.05)
    assert verdict.accuracy_gap == pytest.approx(0.03)
    assert verdict.sentence == ("Clear overfitting: validation loss bottomed at epoch 5 (0.050) and rose to "
                                "0.150 by epoch 15; training accuracy ends 3.0 points above validation.")


def test_a_curve_that_does_not_overfit():
    epochs = 10
    validation_loss = np.linspace(0.3, 0.04, epochs)
    verdict = overfitting_verdict(history(np.linspace(0.4, 0.05, epochs), np.linspace(0.90, 0.985, epochs),
                                          validation_loss, np.linspace(0.91, 0.988, epochs)))

    assert verdict.level == "none"
    assert not verdict.turned_upward
    assert verdict.best_epoch == 10
    assert verdict.sentence.startswith("No sign of overfitting: validation loss was still falling")
    assert "training accuracy ends 0.3 points below validation" in verdict.sentence


def test_a_slight_late_rise_of_validation_loss_reads_as_mild_overfitting():
    validation_loss = [0.2, 0.1, 0.07, 0.05, 0.045, 0.04, 0.035, 0.032, 0.031,
                       0.032, 0.033, 0.034, 0.035, 0.035, 0.036]
    verdict = overfitting_verdict(history(np.linspace(0.3, 0.01, 15), np.linspace(0.9, 0.996, 15),
                                          validation_loss, np.linspace(0.9, 0.99, 15)))

    assert verdict.level == "mild"
    assert verdict.sentence == ("Mild overfitting: validation loss bottomed at epoch 9 (0.031) and rose to "
                                "0.036 by epoch 15; training accuracy ends 0.6 points above validation.")


def test_small_wobbles_are_not_an_upturn_and_missing_validation_is_unknown():
    wobbly = overfitting_verdict(history([0.3, 0.2, 0.1, 0.09], [0.9, 0.95, 0.97, 0.975],
                                         [0.20, 0.10, 0.080, 0.082], [0.92, 0.96, 0.972, 0.973]))
    assert not wobbly.turned_upward and wobbly.level == "none"
    assert "levelled off" in wobbly.sentence

    unknown = overfitting_verdict({"loss": [0.3, 0.2], "accuracy": [0.9, 0.95]})
    assert unknown.level == "unknown" and "cannot be judged" in unknown.sentence
    assert math.isnan(unknown.accuracy_gap)


def test_comparison_names_the_better_model_with_its_numbers():
    shallow = ModelSummary("shallow", accuracy=0.9034, loss=0.35, mistakes=966, count=10_000,
                           training_seconds=300, epochs=500, parameters=50_890)
    cnn = ModelSummary("cnn", accuracy=0.9928, loss=0.025, mistakes=72, count=10_000,
                       training_seconds=600, epochs=15, parameters=34_826)
    comparison = compare([shallow, cnn])

    assert comparison.winners == ["cnn"] and not comparison.tied
    assert [model.name for model in comparison.models] == ["cnn", "shallow"]
    assert comparison.sentence.startswith("cnn is better: 99.28 % test accuracy against 90.34 % for shallow "
                                          "(72 vs 966 mistakes out of 10,000), with lower loss (0.025 vs 0.350)")
    assert comparison.sentence.endswith("; it has 34,826 parameters against 50,890 and trained 15 epochs in "
                                        "10.0 min against 500 epochs in 5.0 min.")
    assert "draw" not in comparison.sentence


def test_a_tie_in_the_comparison_is_called_a_tie():
    first = ModelSummary("first", accuracy=0.98, loss=0.07, mistakes=20, count=1000, training_seconds=30,
                         parameters=50_890)
    second = ModelSummary("second", accuracy=0.98, loss=0.06, mistakes=20, count=1000, training_seconds=12,
                          parameters=34_826)
    third = ModelSummary("third", accuracy=0.95, loss=0.2, mistakes=50, count=1000)
    comparison = compare([third, first, second])

    assert comparison.tied
    assert comparison.winners == ["second", "first"]  # equal accuracy, ordered by lower loss
    assert comparison.sentence.startswith("second and first tie on accuracy at 98.00 % (20 mistakes each out "
                                          "of 1,000); second has the lowest loss (0.060)")
    assert "second trained fastest (12 s)" in comparison.sentence
    assert "Then third (95.00 %)." in comparison.sentence


def test_a_gap_within_test_set_noise_is_flagged_as_a_draw():
    first = ModelSummary("a", accuracy=0.991, loss=0.03, mistakes=9, count=1000)
    second = ModelSummary("b", accuracy=0.990, loss=0.03, mistakes=10, count=1000)
    comparison = compare([second, first])

    assert comparison.winners == ["a"]
    assert "treat it as a draw" in comparison.sentence


def test_a_gap_alone_is_mild_and_one_epoch_is_too_early_to_tell():
    gap_only = overfitting_verdict(history([0.5, 0.3, 0.2], [0.85, 0.92, 0.96], [0.6, 0.4, 0.35], [0.82, 0.88, 0.93]))
    assert gap_only.level == "mild" and not gap_only.turned_upward
    assert gap_only.sentence == ("Early signs of overfitting: validation loss was still falling at the last epoch "
                                 "(0.350 at epoch 3), but training accuracy ends 3.0 points above validation.")

    single = overfitting_verdict(history([0.5], [0.85], [0.4], [0.80]))
    assert single.level == "unknown" and single.sentence.startswith("Too early to tell: only one epoch")


def test_one_epochs_rise_is_noise_and_a_rise_without_a_training_lead_is_not_overfitting():
    # seed-cnn's curve: validation loss falls to 0.022 and ends at 0.026 one epoch later, while training accuracy
    # (measured with dropout on) stays below validation.
    validation_loss = [0.08, 0.05, 0.04, 0.035, 0.03, 0.029, 0.027, 0.026, 0.025, 0.024, 0.024, 0.023, 0.023,
                       0.022, 0.026]
    one_epoch = overfitting_verdict(history(np.linspace(0.3, 0.03, 15), np.linspace(0.90, 0.990, 15),
                                            validation_loss, np.linspace(0.95, 0.992, 15)))
    assert not one_epoch.turned_upward and one_epoch.level == "none"
    assert one_epoch.sentence.startswith("No sign of overfitting: validation loss levelled off: lowest at epoch 14")

    # Three epochs above the lowest, but training accuracy still below validation.
    rising = overfitting_verdict(history(np.linspace(0.3, 0.03, 8), np.linspace(0.90, 0.985, 8),
                                         [0.08, 0.05, 0.03, 0.025, 0.022, 0.025, 0.026, 0.027],
                                         np.linspace(0.95, 0.99, 8)))
    assert rising.turned_upward and rising.level == "none"
    assert rising.sentence == ("No clear sign of overfitting: validation loss bottomed at epoch 5 (0.022) and rose "
                               "to 0.027 by epoch 8, but training accuracy ends 0.5 points below validation.")


def test_a_better_model_with_higher_loss_says_why():
    # The study's run: quick-cnn is more accurate, yet its cross-entropy is higher than seed-cnn's.
    quick = ModelSummary("quick-cnn", accuracy=0.9915, loss=0.129, mistakes=85, count=10_000,
                         label_smoothing=0.1, calibration_error=0.0998)
    seed = ModelSummary("seed-cnn", accuracy=0.9905, loss=0.084, mistakes=95, count=10_000,
                        label_smoothing=0.0, calibration_error=0.0045)
    sentence = compare([seed, quick]).sentence
    assert ("with higher loss (0.129 vs 0.084), because its label smoothing (0.1) trains it to keep 10 % of its "
            "probability off the right digit, which raises cross-entropy even where it is right (calibration error "
            "9.98 % against 0.45 %)") in sentence

    unexplained = compare([ModelSummary("a", 0.99, 0.2, 10, 1000, calibration_error=0.05),
                           ModelSummary("b", 0.98, 0.1, 20, 1000, calibration_error=0.01)]).sentence
    assert "with higher loss (0.200 vs 0.100): its probabilities are less well calibrated (calibration error " \
           "5.00 % against 1.00 %)" in unexplained
