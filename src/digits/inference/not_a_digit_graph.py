"""The not-a-digit detector inside the classifier's Keras graph: what `digits export` writes to ONNX.

`with_digit_score` joins a fitted `DigitDetector` (`digits.inference.not_a_digit`) to a Keras classifier as a
second output, every step a Keras layer or `keras.ops` call, so the exported file gives the probabilities and the
digit score without TensorFlow or this module. `feature_model`, `activation_maps`, `grid_maps` and
`keras_grid_means` are the same graph's pieces that fitting reads the classifier through
(`digits.inference.not_a_digit_fit`), so a detector is fitted on exactly what it will be given.
"""

from __future__ import annotations

import numpy as np

from digits.errors import DigitsError
from digits.inference.not_a_digit import GRID_CELLS, SCORE_OUTPUT, DigitDetector, grid_window


def feature_model(model):
    """A Keras model giving, for the classifier's input, its probabilities and the features its last layer reads."""
    import keras

    last = model.layers[-1]
    return keras.Model(model.inputs[0], [last.output, last.input], name=f"{model.name}_features")


def _class_distances(inputs, whitening: np.ndarray, whitened_means: np.ndarray, name: str):
    """Keras: (N, D) → (N, 10) Mahalanobis distances to each class, and the whitening layer with its weights."""
    import keras

    whiten = keras.layers.Dense(whitening.shape[1], use_bias=False, name=f"{name}_whiten", dtype="float32")
    # |z - m_c|^2 from the differences themselves: |z|^2 - 2 z·m_c + |m_c|^2 loses digits to cancellation in
    # float32, enough to move the export's digit score by 1e-4.
    differences = keras.ops.expand_dims(whiten(inputs), 1) - np.asarray(whitened_means, np.float32)  # (N, 10, D)
    return keras.ops.sqrt(keras.ops.sum(keras.ops.square(differences), axis=-1)), [(whiten, [whitening])]


def activation_maps(model) -> list:
    """The classifier's activation layers whose outputs are still maps (N, H, W, C), earliest first: what Lee et
    al.'s feature ensemble (2018) pools, one class density per layer (relu1, relu2 and relu3 of the shipped CNN)."""
    import keras

    return [layer for layer in model.layers if len(layer.output.shape) == 4
            and (isinstance(layer, keras.layers.Activation | keras.layers.ReLU)
                 or getattr(layer, "activation", keras.activations.linear) is not keras.activations.linear)]


def grid_maps(model) -> list:
    """The activation maps (`activation_maps`) wider than GRID_CELLS, whose grid cells say more than the features
    (relu1 and relu2 of the shipped CNN; relu3, 3 × 3, is the features themselves)."""
    return [layer for layer in activation_maps(model) if int(layer.output.shape[1]) > GRID_CELLS]


def keras_grid_means(maps):
    """Keras: (N, S, S, C) maps → (N, GRID_CELLS² C) each channel's mean in each grid cell, as `grid_means`."""
    import keras

    size, stride = grid_window(int(maps.shape[1]))
    cells = keras.ops.average_pool(keras.ops.cast(maps, "float32"), size, strides=stride, padding="valid")
    return keras.ops.reshape(cells, (-1, GRID_CELLS * GRID_CELLS * int(maps.shape[-1])))


def _layer_distance_inputs(model, features, detector: DigitDetector):
    """Keras: the layer-distance inputs (`DigitDetector.inputs`) of the classifier's graph, and the layers' weights."""
    import keras

    pooled = [keras.ops.mean(keras.ops.cast(layer.output, "float32"), axis=(1, 2)) for layer in activation_maps(model)]
    pooled_count = sum(int(means.shape[-1]) for means in pooled)
    if pooled_count != detector.pooled_count:
        raise DigitsError(f"The not-a-digit detector reads {detector.pooled_count} channel means but this model's "
                          f"activation maps have {pooled_count}; fit the detector for this model.")
    pooled_inputs = keras.ops.concatenate(pooled, axis=-1) if len(pooled) > 1 else pooled[0]
    feature_distances, weights = _class_distances(features, detector.whitening, detector.whitened_means,
                                                  "digit_score_features")
    pooled_distances, pooled_weights = _class_distances(pooled_inputs, detector.pooled_whitening,
                                                        detector.pooled_whitened_means, "digit_score_pooled")
    grid_distances = []
    if detector.has_grids:
        grids = [keras_grid_means(layer.output) for layer in grid_maps(model)]
        if sum(int(cells.shape[-1]) for cells in grids) != detector.grid_count:
            raise DigitsError(f"The not-a-digit detector reads {detector.grid_count} grid cells' channel means but "
                              f"this model's activation maps have {sum(int(cells.shape[-1]) for cells in grids)}; "
                              "fit the detector for this model.")
        grid_inputs = keras.ops.concatenate(grids, axis=-1) if len(grids) > 1 else grids[0]
        start = 0
        # One whitening per block (the diagonal blocks of the stored matrix): the zeros around them cost nothing.
        for index, grid_density in enumerate(detector.grid_densities()):
            end = start + len(grid_density.whitening)
            distances, block_weights = _class_distances(grid_inputs[:, start:end], grid_density.whitening,
                                                        grid_density.whitened_means, f"digit_score_grid{index}")
            grid_distances.append(keras.ops.sort(distances, axis=-1))
            pooled_weights += block_weights
            start = end
    logit_layer = keras.layers.Dense(len(detector.logit_bias), name="digit_score_logits", dtype="float32")
    logits = logit_layer(features)
    log_probabilities = logits - keras.ops.logsumexp(logits, axis=-1, keepdims=True)
    inputs = keras.ops.concatenate([keras.ops.sort(feature_distances, axis=-1),
                                    keras.ops.sort(pooled_distances, axis=-1), *grid_distances,
                                    keras.ops.sort(log_probabilities, axis=-1), pooled_inputs], axis=-1)
    return inputs, weights + pooled_weights + [(logit_layer, [detector.logit_weights, detector.logit_bias])]


def with_digit_score(model, detector: DigitDetector):
    """The Keras classifier with a second output, the detector's digit score: images → [(N, 10), (N, 1)].

    Every step is a Keras layer or keras.ops call (matrix products, a minimum, a log-sum-exp), so `digits export`
    writes the whole score into the ONNX file.
    """
    import keras

    last = model.layers[-1]
    features = last.input
    if features.shape[-1] != detector.feature_count:
        raise DigitsError(f"The not-a-digit detector reads {detector.feature_count} features but this model's last "
                          f"layer reads {features.shape[-1]}; fit the detector for this model.")
    features = keras.ops.cast(features, "float32")
    inputs = features
    weights: list[tuple[keras.layers.Layer, list[np.ndarray]]] = []
    if detector.has_layer_distances:
        inputs, weights = _layer_distance_inputs(model, features, detector)
    elif detector.has_density:
        whiten = keras.layers.Dense(detector.feature_count, use_bias=False, name="digit_score_whiten", dtype="float32")
        # |z - m_c|^2 = |z|^2 + (|m_c|^2 - 2 z·m_c): the bracket is one Dense layer over z.
        to_means = keras.layers.Dense(len(detector.logit_bias), name="digit_score_to_means", dtype="float32")
        logits = keras.layers.Dense(len(detector.logit_bias), name="digit_score_logits", dtype="float32")
        whitened = whiten(features)
        squared = keras.ops.sum(keras.ops.square(whitened), axis=-1, keepdims=True) + to_means(whitened)
        distance = keras.ops.sqrt(keras.ops.maximum(keras.ops.min(squared, axis=-1, keepdims=True), 0.0))
        energy_ = keras.ops.logsumexp(logits(features), axis=-1, keepdims=True)
        inputs = keras.ops.concatenate([features, distance, energy_], axis=-1)
        weights += [(whiten, [detector.whitening]),
                    (to_means, [-2 * detector.whitened_means.T, (detector.whitened_means ** 2).sum(axis=1)]),
                    (logits, [detector.logit_weights, detector.logit_bias])]
    hidden_layer = keras.layers.Dense(detector.hidden_weights.shape[1], activation="relu", name="digit_score_hidden",
                                      dtype="float32")
    score_layer = keras.layers.Dense(1, activation="sigmoid", name=SCORE_OUTPUT, dtype="float32")
    score = score_layer(hidden_layer(inputs))
    weights += [(hidden_layer, [detector.hidden_weights, detector.hidden_bias]),
                (score_layer, [detector.output_weights, detector.output_bias])]
    for layer, arrays in weights:
        layer.set_weights([np.asarray(array, np.float32) for array in arrays])
    return keras.Model(model.inputs[0], [last.output, score], name=model.name)
