"""Learning-rate schedules, registered with Keras so that a saved model.keras names them and reloads.

Importing this module registers them; `digits.training.runs.load_model` and `digits.train` do so (and import
`digits.training.augment`, which registers the augmentation layer the same way).
"""

from __future__ import annotations

import keras
from keras import ops

# The share of the steps spent warming up in a one-cycle schedule.
WARMUP_FRACTION = 0.2


@keras.saving.register_keras_serializable(package="digits")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `peak` over `warmup_steps`, then linear decay to 0 at `total_steps`."""

    def __init__(self, peak: float, total_steps: int, warmup_steps: int):
        if not 0 < warmup_steps < total_steps:
            raise ValueError(f"warmup_steps must be in (0, total_steps), not {warmup_steps} of {total_steps}")
        self.peak = float(peak)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)

    @classmethod
    def for_run(cls, peak: float, total_steps: int) -> OneCycle:
        """The schedule for a run of `total_steps` optimizer steps, warming up over WARMUP_FRACTION of them."""
        total_steps = max(2, total_steps)
        return cls(peak, total_steps, min(total_steps - 1, max(1, round(WARMUP_FRACTION * total_steps))))

    def __call__(self, step):
        step = ops.cast(step, "float32")
        rising = self.peak * step / self.warmup_steps
        falling = self.peak * (self.total_steps - step) / (self.total_steps - self.warmup_steps)
        return ops.where(step < self.warmup_steps, rising, ops.maximum(falling, 0.0))

    def get_config(self) -> dict:
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps}
