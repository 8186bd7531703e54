"""Pure statistics over measured samples and request intervals. No I/O."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel


def percentile(samples: Sequence[float], share: float) -> float:
    """The `share` (0–1) percentile with linear interpolation between the closest ranks."""
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be between 0 and 1 (got {share})")
    ordered = sorted(samples)
    position = share * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(samples: Sequence[float]) -> float:
    return percentile(samples, 0.5)


class Spread(BaseModel):
    """A figure's repeats in one run: its median, quartiles and extremes over `n` samples."""

    n: int
    p50: float
    p25: float
    p75: float
    p95: float
    low: float
    high: float


def spread(samples: Sequence[float]) -> Spread:
    return Spread(
        n=len(samples),
        p50=median(samples),
        p25=percentile(samples, 0.25),
        p75=percentile(samples, 0.75),
        p95=percentile(samples, 0.95),
        low=min(samples),
        high=max(samples),
    )


@dataclass(frozen=True)
class Request:
    """One request at the engine: when its generation was scheduled (queued in Temporal), when it arrived at
    the engine, when the engine finished it. Seconds on one clock."""

    scheduled: float
    started: float
    finished: float


def max_in_flight(requests: Sequence[Request]) -> int:
    """The most requests ever at the engine at once (one ending as another starts is not an overlap)."""
    events = sorted([(r.started, 1) for r in requests] + [(r.finished, -1) for r in requests])
    current = most = 0
    for _, change in events:
        current += change
        most = max(most, current)
    return most


@dataclass(frozen=True)
class SlotUse:
    cap: int
    backlog_seconds: float  # time during which at least one generation waited for a slot
    full_seconds: float  # of that, time during which `cap` or more requests were at the engine
    slot_seconds: float  # of that, busy slot time: requests at the engine (at most `cap`) × time

    @property
    def share(self) -> float:
        """Share of the backlog time with every slot busy; 1.0 when there never was a backlog."""
        return self.full_seconds / self.backlog_seconds if self.backlog_seconds else 1.0

    @property
    def occupancy(self) -> float:
        """Mean share of the slots busy during the backlog; 1.0 when there never was a backlog."""
        return self.slot_seconds / (self.cap * self.backlog_seconds) if self.backlog_seconds else 1.0


def slot_use(requests: Sequence[Request], cap: int) -> SlotUse:
    """How full the engine stayed while work waited: a request waits from `scheduled` to `started` and is at
    the engine from `started` to `finished`."""
    events: list[tuple[float, int, int]] = []  # (time, change in waiting, change in in-flight)
    for r in requests:
        events += [(r.scheduled, 1, 0), (r.started, -1, 1), (r.finished, 0, -1)]
    events.sort()
    waiting = in_flight = 0
    backlog = full = slot_seconds = 0.0
    previous = events[0][0] if events else 0.0
    for time, waiting_change, in_flight_change in events:
        span = time - previous
        if waiting > 0:
            backlog += span
            slot_seconds += span * min(in_flight, cap)
            if in_flight >= cap:
                full += span
        waiting += waiting_change
        in_flight += in_flight_change
        previous = time
    return SlotUse(cap=cap, backlog_seconds=backlog, full_seconds=full, slot_seconds=slot_seconds)
