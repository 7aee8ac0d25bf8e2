"""Training: recipes (declared, validated), architectures, augmentation, schedules, fit, run folders.

One recipe and the data in, one trained Keras model and its run folder out. `fit` is the only place that calls
Keras's `fit()`; `runs` is the only place that creates or reads a run folder.

May import: `digits.data`, `digits.errors`.
"""
