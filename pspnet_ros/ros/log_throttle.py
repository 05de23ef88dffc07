"""Log throttling per *kind* of problem, not per call site.

rclpy's ``throttle_duration_sec`` throttles per call site: every dropped frame goes through the
same ``warning()`` line, so a burst of truncated frames would hide the first frame with an
unknown encoding that follows it within the period. Here each kind of problem (the message with
its numbers and quoted values blanked, e.g. ``data has # bytes but step*height = ...``) gets its
own line once per period, and the next line of that kind says how many were suppressed.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from typing import Callable, Hashable, Optional, Tuple

# Quoted values and numbers vary frame to frame; the rest of a message names the problem.
_VARIABLE = re.compile(r"'[^']*'|\"[^\"]*\"|\d+(\.\d+)?")


def problem_kind(message: str, max_len: int = 80) -> str:
    """Return a stable key for the kind of problem a message describes.

    ``"data has 16 bytes but step*height = 30*10 = 300"`` and ``"data has 9 bytes but ..."``
    share a kind; ``"unsupported encoding 'hsv8'"`` and ``"unsupported encoding 'foo'"`` too.
    """
    return _VARIABLE.sub("#", message)[:max_len]


class KindThrottle:
    """Allows one event per kind per ``period_s``; remembers at most ``max_kinds`` kinds.

    The least recently seen are forgotten, so a stream of ever-new kinds cannot grow memory.
    """

    def __init__(self, period_s: float = 5.0, max_kinds: int = 64,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.period_s = period_s
        self.max_kinds = max_kinds
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: "OrderedDict[Hashable, Tuple[float, int]]" = OrderedDict()

    def allow(self, kind: Hashable) -> Optional[int]:
        """Return None to suppress this event, else the count of its kind suppressed since the last allowed one.

        The count is 0 for the first event of a kind.
        """
        now = self._clock()
        with self._lock:
            last = self._seen.pop(kind, None)
            if last is not None and now - last[0] < self.period_s:
                self._seen[kind] = (last[0], last[1] + 1)
                return None
            self._seen[kind] = (now, 0)
            while len(self._seen) > self.max_kinds:
                self._seen.popitem(last=False)
            return 0 if last is None else last[1]
