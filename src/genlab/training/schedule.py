"""Learning-rate schedules as pure functions of the step, so a resumed run follows them exactly."""

from __future__ import annotations

import math


def lr_factor(
    schedule: str, step: int, total_steps: int, warmup_steps: int = 0, progress: float | None = None
) -> float:
    """The multiple of ``train.lr`` used by optimiser step ``step`` (0-based) of ``total_steps``.

    A pure function of the step, so a resumed run follows the schedule exactly. ``cosine``
    (Loshchilov & Hutter 2017, without restarts) and ``linear`` fall from 1 towards 0 over the
    planned steps (``epochs`` x steps per epoch, or ``max_steps``): the small last steps average
    the gradient noise out instead of leaving the weights wherever the noise put them.
    Changing ``--epochs`` on resume stretches the remaining schedule.

    ``progress`` (the ``lr_clock=time`` case: training seconds over the time budget) replaces
    ``step / total_steps``, so the decay ends when the budget does, however fast the machine is;
    the warm-up still counts steps.
    """
    progress = min(step / max(total_steps, 1) if progress is None else progress, 1.0)
    factor = {"constant": 1.0, "linear": 1.0 - progress, "cosine": 0.5 * (1.0 + math.cos(math.pi * progress))}[schedule]
    if warmup_steps:
        factor *= min(1.0, (step + 1) / warmup_steps)
    return factor
