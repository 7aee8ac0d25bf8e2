"""Sweeps: Optuna studies over recipes on the holdout: search spaces (`space`, `spaces/*.toml`), one trial (`trial`),
running workers (`run`) and the HTML report (`report`).

May import: `digits.study` and every stage below it.
"""
