"""Frames lost before a subscriber's callback, counted from sequence numbers and header stamps.

ROS-free (the node passes plain numbers), so it is unit-tested with known answers.

Two sources, used in this order:

* Publication sequence numbers (rclpy message info, Iron and later; Jazzy's rclpy gives them
  without the publisher gid, Kilted's with it). A sequence gap of k is k - 1 samples lost,
  exactly, and the stamp gap over k is one sample of the camera's period. Sequence numbers
  count per publisher, so each publisher is a *stream*: keyed by its gid where the middleware
  gives one; without a gid a sample continues the stream whose last sequence number is below
  it and whose stamp gap per sequence step matches the camera's period (several publishers on
  one topic, a restarted camera next to a stale one).
* Header stamps alone (Humble, or an RMW that reports no sequence numbers). Frames that reach
  the callback are whole multiples of the camera's period apart, so the period is the longest
  one of which (nearly) every recent gap is a multiple (camera_info stamps, from a deeper queue,
  add samples). A gap of k periods is k - 1 frames lost.

Not losses, in either path: a gap longer than ``max_gap_s`` in stamps or in arrival time (a
paused camera, a bag between loops, a node that was inactive), stamps that repeat or go back (a
looping bag, a restarted camera). :meth:`LossMeter.reset` forgets everything (the node calls it
on each lifecycle activation). Streams not seen for ``stream_ttl_s`` are forgotten, and at most
``max_streams`` are kept, so restarted publishers do not accumulate. Not thread-safe: one
thread (the executor's) calls it.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Callable, Deque, Hashable, List, Optional

# A gap longer than this (stamps or arrival) is a paused camera or an inactive node, not losses.
MAX_GAP_S = 5.0
# A stamp gap counts as lost frames when it is longer than this many camera periods.
GAP_FACTOR = 1.5
# Stamps closer than this are not a camera's clock (synthetic counters, duplicated stamps).
MIN_PERIOD_S = 1e-3
# How far (fraction of the period) a stamp gap may be from a whole number of periods.
MULTIPLE_TOLERANCE = 0.2
# Share of the recent stamp gaps that must be whole multiples of a candidate period.
MULTIPLE_SHARE = 0.85
# Samples needed before a period is given.
MIN_SAMPLES = 3


@dataclass
class _Stream:
    """One publisher's last sample."""

    seq: int
    stamp: float  # seconds; <= 0: the publisher does not stamp
    arrived: float  # monotonic seconds


class LossMeter:
    """Count the frames of one input that never reached the callback; estimate its period."""

    def __init__(self, *, history: int = 64, max_gap_s: float = MAX_GAP_S, max_streams: int = 8,
                 stream_ttl_s: float = 2 * MAX_GAP_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_gap_s = float(max_gap_s)
        self.max_streams = int(max_streams)
        self.stream_ttl_s = float(stream_ttl_s)
        self._history = int(history)
        self._clock = clock
        self.reset()

    def reset(self) -> None:
        """Forget every stream, stamp and period sample (a new activation starts afresh)."""
        # (kind, publisher key) -> stream; kind "image" or "info" (they count separately)
        self._streams: "OrderedDict[Hashable, _Stream]" = OrderedDict()
        self._anonymous = 0  # names for streams of publishers without a gid
        self._seq_periods: Deque[float] = deque(maxlen=self._history)  # stamp gap / sequence gap
        self._stamp_gaps: Deque[float] = deque(maxlen=self._history)  # from stamps alone
        self._last_stamp = {"image": None, "info": None}

    def tracked_publishers(self) -> int:
        """Return how many publishers' sequence numbers are remembered now (at most max_streams)."""
        return len(self._streams)

    # ------------------------------------------------------------------ input
    def image(self, stamp: float, seq: Optional[int] = None, publisher: Optional[Hashable] = None,
              now: Optional[float] = None) -> int:
        """Record an image; return the frames lost just before it.

        ``stamp``: header stamp in seconds (<= 0: unstamped). ``seq``: the publisher's sequence
        number where the middleware reports it (0 or None: unknown). ``publisher``: the
        publisher's gid (any hashable) where reported, else None. ``now``: arrival time
        (monotonic seconds; default: the meter's clock).
        """
        return self._sample("image", stamp, seq, publisher, now)

    def camera_info(self, stamp: float, seq: Optional[int] = None, publisher: Optional[Hashable] = None,
                    now: Optional[float] = None) -> None:
        """Record a camera_info (same camera clock; its deeper queue adds period samples)."""
        self._sample("info", stamp, seq, publisher, now)

    def _sample(self, kind: str, stamp: float, seq: Optional[int], publisher: Optional[Hashable],
                now: Optional[float]) -> int:
        now = self._clock() if now is None else float(now)
        stamp = float(stamp)
        self._expire(now)
        if seq:
            return self._sequence(kind, stamp, int(seq), publisher, now)
        return self._stamps(kind, stamp)

    # --------------------------------------------------------------- sequence
    def _sequence(self, kind: str, stamp: float, seq: int, publisher: Optional[Hashable], now: float) -> int:
        if publisher is not None and publisher != "":
            key = (kind, publisher)
            last = self._streams.get(key)
        else:
            key, last = self._match(kind, stamp, seq, now)
        self._streams[key] = _Stream(seq, stamp, now)
        self._streams.move_to_end(key)
        while len(self._streams) > self.max_streams:
            self._streams.popitem(last=False)
        if last is None or seq <= last.seq:  # a new or restarted publisher
            return 0
        if now - last.arrived > self.max_gap_s:  # paused, or the node was not listening
            return 0
        steps = seq - last.seq
        if stamp > 0 and last.stamp > 0:
            gap = stamp - last.stamp
            if gap <= 0 or gap > self.max_gap_s:  # stamps went back, or the camera paused
                return 0
            if gap / steps >= MIN_PERIOD_S:
                self._seq_periods.append(gap / steps)
        lost = steps - 1
        return lost if kind == "image" else 0

    def _match(self, kind: str, stamp: float, seq: int, now: float):
        """Find the anonymous stream this sample continues: (key, its last sample or None)."""
        period = self.period()
        best, best_cost = None, math.inf
        for key, s in self._streams.items():
            if key[0] != kind or not isinstance(key[1], _Anon) or s.seq >= seq:
                continue
            steps = seq - s.seq
            if period and stamp > 0 and s.stamp > 0:
                gap = stamp - s.stamp
                if gap <= 0:
                    continue
                # stamp gap per sequence step against the camera's period (log ratio: symmetric)
                cost = abs(math.log(gap / steps / period))
                if cost > math.log(2.0):  # not this publisher's pace
                    continue
            else:
                cost = float(steps)  # no period yet: the nearest sequence number
            if cost < best_cost:
                best, best_cost = key, cost
        if best is None:
            self._anonymous += 1
            return (kind, _Anon(self._anonymous)), None
        return best, self._streams[best]

    def _expire(self, now: float) -> None:
        for key in [k for k, s in self._streams.items() if now - s.arrived > self.stream_ttl_s]:
            del self._streams[key]

    # ----------------------------------------------------------------- stamps
    def _stamps(self, kind: str, stamp: float) -> int:
        if stamp <= 0:
            return 0
        last, self._last_stamp[kind] = self._last_stamp[kind], stamp
        if last is None or stamp <= last or stamp - last > self.max_gap_s:
            return 0
        gap = stamp - last
        if gap < MIN_PERIOD_S:
            return 0
        self._stamp_gaps.append(gap)
        if kind != "image":
            return 0
        period = self.period()
        if not period or gap <= GAP_FACTOR * period:
            return 0
        return max(int(round(gap / period)) - 1, 0)

    # ----------------------------------------------------------------- period
    def period(self) -> Optional[float]:
        """Return the camera's frame period in seconds, or None until it is known."""
        if len(self._seq_periods) >= MIN_SAMPLES:
            return _median(list(self._seq_periods))
        if len(self._stamp_gaps) >= MIN_SAMPLES:
            return fundamental_period(list(self._stamp_gaps))
        return None


class _Anon(int):
    """Key of a stream whose publisher has no gid (distinct from any gid value)."""


def _median(values: List[float]) -> float:
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


def fundamental_period(gaps: List[float], max_divisor: int = 8) -> Optional[float]:
    """Return the longest period of which (nearly) every gap is a whole multiple, in seconds.

    Gaps between the frames that got through are k_i periods (k_i >= 1). Candidates are a
    short gap (the 10th percentile) divided by 1..``max_divisor``. A candidate explains a gap
    that is within MULTIPLE_TOLERANCE of a whole multiple of it. Shorter candidates explain
    more gaps by chance, so the longest candidate that explains all but a few (5%) of the gaps
    the best one explains wins; the result is refined as sum(gap) / sum(k) over the gaps it
    explains. When every gap is the same multiple (a callback exactly 3x slower than the
    camera, nothing else) the stamps cannot tell, and that gap is returned.
    """
    gaps = [g for g in gaps if g >= MIN_PERIOD_S]
    if len(gaps) < MIN_SAMPLES:
        return None
    ordered = sorted(gaps)
    base = ordered[int(0.1 * (len(ordered) - 1))]
    fits_by_divisor = []
    for divisor in range(1, max_divisor + 1):
        cand = base / divisor
        if cand < MIN_PERIOD_S:
            break
        fits = []
        for g in gaps:
            k = round(g / cand)
            if k >= 1 and abs(g / cand - k) <= MULTIPLE_TOLERANCE:
                fits.append((g, k))
        fits_by_divisor.append(fits)
    best = max(len(f) for f in fits_by_divisor)
    slack = max(1, int(0.05 * len(gaps)))
    for fits in fits_by_divisor:  # longest candidate first
        if len(fits) >= best - slack and len(fits) >= MULTIPLE_SHARE * best:
            return sum(g for g, _ in fits) / sum(k for _, k in fits)
    return base
