"""Progress of long commands: a tqdm bar in a terminal, a plain line now and then when not.

``genlab train ... > log 2>&1`` used to print nothing for a whole run: the bar hides itself when
stderr is no terminal, since a file full of carriage-return redraws is unreadable. Here a
non-terminal stderr gets one plain line every :func:`interval_seconds` (30 s by default;
``GENLAB_PROGRESS_INTERVAL`` overrides it, which is how tests see lines at once) and whenever the
caller marks a milestone (an epoch's end), e.g.::

    train: step 385/400 (96%), epoch 0.62, loss 0.07088 | 7,511 images/s, 0:00:01 elapsed, ETA 0:00:00

Every command that can run for more than a few seconds (train, nll, evaluate, sample, fid) reports
through one :class:`Progress`, so the lines look the same everywhere.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

INTERVAL_ENV = "GENLAB_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 30.0  # seconds between plain lines: a log stays short, yet a stuck run shows within a minute


def interval_seconds() -> float:
    """Seconds between plain progress lines: ``$GENLAB_PROGRESS_INTERVAL`` when it is a number >= 0, else 30."""
    try:
        value = float(os.environ.get(INTERVAL_ENV, ""))
    except ValueError:
        return DEFAULT_INTERVAL
    return value if math.isfinite(value) and value >= 0 else DEFAULT_INTERVAL


def format_duration(seconds: float) -> str:
    """``3725.2`` -> ``"1:02:05"``."""
    s = max(0, round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _figure(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class Progress:
    """Where a loop of ``total`` units stands, told to a person on ``stream`` (default stderr).

    ``update(n)`` gives the position (units done, not an increment, so a caller can call it at
    any rate: in plain mode it costs one clock read unless a line is due). ``set_figures`` names
    the latest figures (losses) shown with it; ``milestone()`` prints a plain line at once (a
    terminal's bar already shows it). ``per_unit`` and ``rate_unit`` turn the rate into, say,
    images/s for steps of 512 images; ``where(n)`` adds text after the position ("epoch 2.56").
    ``announce`` prints a plain line at the start, for work whose first update may be minutes away.
    Disabled (``enabled=False``, e.g. ``--quiet``), it prints nothing.
    """

    def __init__(
        self,
        total: int,
        *,
        desc: str,
        unit: str = "it",
        initial: int = 0,
        enabled: bool = True,
        per_unit: float = 1.0,
        rate_unit: str | None = None,
        where: Callable[[int], str] | None = None,
        stream: TextIO | None = None,
        announce: bool = False,
    ):
        self.total, self.desc, self.unit, self.initial = total, desc, unit, initial
        self.per_unit, self.rate_unit, self.where = per_unit, rate_unit or unit, where
        self.stream = stream if stream is not None else sys.stderr
        self.n = initial
        self.figures: dict[str, Any] = {}
        self.t0 = time.perf_counter()
        self.interval = interval_seconds()
        self._last_line = self.t0
        self._printed_n = initial
        self._bar = None
        isatty = getattr(self.stream, "isatty", None)
        self.plain = enabled and not (callable(isatty) and isatty())
        if enabled and not self.plain:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, file=self.stream, leave=False
            )
        if announce and self.plain:
            self._print_line()

    def update(self, n: int) -> None:
        """Units done so far (the position, not an increment)."""
        if n == self.n:
            return
        if self._bar is not None:
            self._bar.update(n - self.n)
        self.n = n
        if self.plain and time.perf_counter() - self._last_line >= self.interval:
            self._print_line()

    def set_figures(self, **figures: Any) -> None:
        """The figures (e.g. the latest mean losses) shown beside the position from now on."""
        self.figures = figures
        if self._bar is not None:
            self._bar.set_postfix({k: _figure(v) for k, v in figures.items()}, refresh=False)

    def milestone(self) -> None:
        """A plain line now (an epoch ended), unless this position was just printed."""
        if self.plain and self.n != self._printed_n:
            self._print_line()

    def line(self) -> str:
        """The plain progress line for the current position."""
        now = time.perf_counter()
        elapsed = now - self.t0
        done = self.n - self.initial
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total > 0 else ""
        head = f"{self.desc}: {self.unit} {self.n:,}/{self.total:,}{pct}"
        extra = [self.where(self.n)] if self.where is not None else []
        extra += [f"{k} {_figure(v)}" for k, v in self.figures.items()]
        tail = []
        if done > 0 and elapsed > 0:
            rate = done / elapsed
            shown = rate * self.per_unit
            tail.append(f"{shown:,.0f} {self.rate_unit}/s" if shown >= 10 else f"{shown:.3g} {self.rate_unit}/s")
            tail.append(f"{format_duration(elapsed)} elapsed")
            tail.append(f"ETA {format_duration(max(0, self.total - self.n) / rate)}")
        else:
            tail.append(f"{format_duration(elapsed)} elapsed")
        return ", ".join([head, *extra]) + " | " + ", ".join(tail)

    def _print_line(self) -> None:
        print(self.line(), file=self.stream, flush=True)
        self._last_line = time.perf_counter()
        self._printed_n = self.n

    def close(self) -> None:
        """End the bar; in plain mode, a last line when the work took long enough to have had lines."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.plain and self.n != self._printed_n and time.perf_counter() - self.t0 >= self.interval:
            self._print_line()
        self.plain = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
