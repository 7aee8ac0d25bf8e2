"""The study's architectures: shapes, parameter counts, and what `digits models` shows."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import run_digits
from digits.errors import DigitsError
from digits.training.models import MODELS, build_model

STUDY_PARAMETERS = {"shallow": 50_890, "cnn": 34_826}


@pytest.mark.parametrize("name", sorted(STUDY_PARAMETERS))
def test_model_has_the_study_shape_and_parameter_count(name):
    model = build_model(name)
    assert model.name == name
    assert model.count_params() == STUDY_PARAMETERS[name]
    assert tuple(model.input_shape) == (None, 28, 28, 1)
    assert tuple(model.output_shape) == (None, 10)
    images = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)
    probabilities = np.asarray(model.predict(images, verbose=0))
    assert probabilities.shape == (3, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)  # softmax output


def test_shallow_is_784_64_10():
    flatten, hidden, output = build_model("shallow").layers
    assert flatten.count_params() == 0
    assert (hidden.units, hidden.count_params()) == (64, 784 * 64 + 64)
    assert (output.units, output.count_params()) == (10, 64 * 10 + 10)


def test_unknown_model_names_the_valid_ones():
    with pytest.raises(DigitsError, match="shallow, cnn"):
        build_model("resnet")


@pytest.mark.parametrize("name", sorted(STUDY_PARAMETERS))
@pytest.mark.slow
def test_models_command_prints_the_keras_summary(name):
    result = run_digits("models", name, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"Total params: {STUDY_PARAMETERS[name]:,}" in result.stdout


def test_models_command_lists_every_model(capsys):
    from digits.cli import main

    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(MODELS)
    assert "shallow" in lines[0] and "50,890 parameters" in lines[0]
    assert "cnn" in lines[1] and "34,826 parameters" in lines[1]
