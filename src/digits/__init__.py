"""digits: train, understand, compare and use MNIST handwritten-digit classifiers."""

import os

__version__ = "0.1.0"

# TensorFlow is the study's own backend and the fastest we measured on these CPUs; a user's choice wins.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# TensorFlow's C++ start-up chatter (oneDNN notices, CPU feature lines) is noise to a user of the CLI.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
