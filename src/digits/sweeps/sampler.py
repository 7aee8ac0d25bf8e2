"""The sweep's sampler: each trial draws from a generator seeded by the space's seed and the trial's number.

Seeding each worker's sampler with the space's seed made workers that start together on a fresh study draw the
same values (5 of 24 trials were exact duplicates across two machines). Every trial of a study has its own number,
given out by the storage, so seeding each trial's draws from (space seed, trial number) makes every worker draw
differently, while a sweep run again the same way draws the same values: for the random sampler and TPE's first
trials exactly; later TPE trials also depend on the results the study holds when they start. Imported only when
a sweep runs (it imports Optuna).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler, TPESampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState


def trial_seed(space_seed: int, trial_number: int) -> int:
    """The seed of one trial's draws: a 32-bit mix of the space's seed and the trial's number."""
    return zlib.crc32(f"digits sweep {space_seed} trial {trial_number}".encode())


class TrialSeededSampler(BaseSampler):
    """Optuna's random or TPE sampler, made anew before each trial with `trial_seed(seed, trial.number)`."""

    def __init__(self, kind: str, seed: int):
        self.kind = kind
        self.seed = seed
        self.sampler = self._sampler(trial_seed(seed, 0))

    def _sampler(self, seed: int) -> BaseSampler:
        return RandomSampler(seed=seed) if self.kind == "random" else TPESampler(seed=seed)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        # Called by `study.ask` once the trial has its number, before anything is drawn for it.
        self.sampler = self._sampler(trial_seed(self.seed, trial.number))
        self.sampler.before_trial(study, trial)

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.sampler.infer_relative_search_space(study, trial)

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self.sampler.sample_relative(study, trial, search_space)

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self.sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self.sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.sampler.reseed_rng()
