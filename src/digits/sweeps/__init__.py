"""Sweeps: Optuna studies over recipes on the holdout: search spaces (`space`, `spaces/*.toml`), one trial (`trial`),
running workers (`run`), the sampler each trial draws from (`sampler`) and the HTML report (`report`).

May import: `digits.study` and every stage below it.
"""
