"""Training: recipes (declared, validated), architectures, augmentation, schedules, fit, run folders.

One recipe and the data in, one trained Keras model and its run folder out. `fit` is the only place that calls
Keras's `fit()`; `runs` is the only place that creates or reads a run folder. What digits reads from outside is a
declared pydantic model: `recipes.Recipe`, and the run folder's JSON files in `run_files`; `declared` holds what
they share (`Choices`, and `first_problem`, which turns a ValidationError into one sentence). `file_access` is
the one way digits reads its own files (bounded, never waiting on a pipe) and writes them (atomically, never
through a link).

May import: `digits.data`, `digits.errors`.
"""
