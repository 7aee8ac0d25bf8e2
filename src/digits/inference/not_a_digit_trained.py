"""Not-a-digit scores from networks trained for it, measured like the post-hoc ones (issue 23, third round).

The methods of `digits.inference.not_a_digit_methods` read the features of a classifier that was never trained
to tell digits from anything else. The two here train pixels-to-score networks against the generated non-digits
(never a picture of the kind left out, never a real picture):

  binary CNN          a small CNN of its own (`binary_cnn`), trained from scratch on the training part's MNIST and
                      font digits (label 1) against its non-digits (label 0); its logit is the score
  outlier exposure    the classifier itself fine-tuned for one epoch with Hendrycks et al.'s (2019) Outlier
                      Exposure loss: cross-entropy on its training digits plus OE_WEIGHT × the cross-entropy to
                      the uniform distribution on the non-digits; its largest probability is the score

Both read `Read.images`, the prepared 28×28 pictures `draw_parts` keeps beside the classifier's readings.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from digits.data.mnist import to_model_input

# Four epochs on the comparison's share (about 11,000 pictures) take about 20 s on 2 busy cores, so that eight fits
# take minutes; twelve lifted the CNN alone's held-out letters from 33 to 47 % (docs/inference.md).
BINARY_EPOCHS = 4
BINARY_BATCH = 128
BINARY_LEARNING_RATE = 2e-3
# Outlier Exposure's weight on the non-digits' loss: Hendrycks et al. use 0.5 for vision.
OE_WEIGHT = 0.5
OE_EPOCHS = 1
# Small steps: the fine-tune must not cost the classifier its accuracy on digits.
OE_LEARNING_RATE = 1e-4


def binary_cnn():
    """28×28 picture → one logit, higher for a digit: standardise, conv 32 5×5 → pool → relu, conv 64 3×3 →
    pool → relu, dense 64 relu, dense 1; about 120,000 parameters."""
    import keras
    from keras import layers

    from digits.training.models import INPUT_SHAPE, MNIST_MEAN, MNIST_STD

    return keras.Sequential(
        [
            keras.Input(shape=INPUT_SHAPE),
            layers.Rescaling(1 / MNIST_STD, offset=-MNIST_MEAN / MNIST_STD, name="standardise"),
            layers.Conv2D(32, kernel_size=(5, 5), name="conv1"),  # -> (24, 24, 32)
            layers.MaxPooling2D(pool_size=(2, 2), name="pool1"),  # -> (12, 12, 32)
            layers.Activation("relu", name="relu1"),
            layers.Conv2D(64, kernel_size=(3, 3), name="conv2"),  # -> (10, 10, 64)
            layers.MaxPooling2D(pool_size=(2, 2), name="pool2"),  # -> (5, 5, 64)
            layers.Activation("relu", name="relu2"),
            layers.Flatten(name="flatten"),  # -> (1600,)
            layers.Dense(64, activation="relu", name="hidden"),
            layers.Dense(1, name="digit_logit", dtype="float32"),
        ],
        name="binary_cnn",
    )


def fit_binary_cnn(digit_images: np.ndarray, other_images: np.ndarray, *, seed: int = 0,
                   epochs: int = BINARY_EPOCHS) -> Callable[[np.ndarray], np.ndarray]:
    """Train `binary_cnn` on uint8 (N, 28, 28) digits against non-digits, each side weighing the same in the loss;
    returns images → (N,) logits."""
    import keras

    keras.utils.set_random_seed(seed)
    network = binary_cnn()
    network.compile(optimizer=keras.optimizers.Adam(BINARY_LEARNING_RATE),
                    loss=keras.losses.BinaryCrossentropy(from_logits=True))
    images = to_model_input(np.concatenate([digit_images, other_images]))
    labels = np.r_[np.ones(len(digit_images)), np.zeros(len(other_images))].astype(np.float32)
    # Balanced: the two sides weigh the same, however many pictures each has.
    weights = np.where(labels == 1, len(labels) / (2 * len(digit_images)), len(labels) / (2 * len(other_images)))
    network.fit(images, labels, sample_weight=weights, epochs=epochs, batch_size=BINARY_BATCH, shuffle=True,
                verbose=0)
    def logits(pictures: np.ndarray) -> np.ndarray:
        if len(pictures) == 0:  # A kind with no picture of ink (Keras cannot predict on none).
            return np.zeros(0, np.float32)
        return np.asarray(network.predict(to_model_input(pictures), batch_size=1000, verbose=0))[:, 0]

    return logits


def fit_outlier_exposure(classifier, digit_images: np.ndarray, digit_labels: np.ndarray,
                         other_images: np.ndarray, *, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """A copy of the Keras `classifier` fine-tuned with the Outlier Exposure loss on uint8 (N, 28, 28) digits (with
    their labels) and non-digits (the module's docstring); returns images → (N, 10) probabilities. Its batch
    normalisation keeps the classifier's statistics (frozen): the non-digits must not move what digits look like."""
    import keras

    keras.utils.set_random_seed(seed)
    tuned = keras.models.clone_model(classifier)
    tuned.set_weights(classifier.get_weights())
    for layer in tuned.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    tuned.compile(optimizer=keras.optimizers.Adam(OE_LEARNING_RATE), loss=keras.losses.CategoricalCrossentropy())
    classes = tuned.output_shape[-1]
    # Digits: their one-hot class. Non-digits: the uniform distribution, whose cross-entropy is OE's loss.
    targets = np.r_[np.eye(classes, dtype=np.float32)[digit_labels],
                    np.full((len(other_images), classes), 1 / classes, np.float32)]
    weights = np.r_[np.ones(len(digit_images)), np.full(len(other_images), OE_WEIGHT)].astype(np.float32)
    tuned.fit(to_model_input(np.concatenate([digit_images, other_images])), targets, sample_weight=weights,
              epochs=OE_EPOCHS, batch_size=BINARY_BATCH, shuffle=True, verbose=0)
    def probabilities(pictures: np.ndarray) -> np.ndarray:
        if len(pictures) == 0:
            return np.zeros((0, classes), np.float32)
        return np.asarray(tuned.predict(to_model_input(pictures), batch_size=1000, verbose=0))

    return probabilities
