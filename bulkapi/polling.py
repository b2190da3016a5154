"""Waiting for something another process changes, by looking again now and then."""

from __future__ import annotations

import time

#: Delay before the second look, by default; it doubles up to the last delay.
FIRST_POLL_SECONDS = 0.02
LAST_POLL_SECONDS = 0.25


class Poll:
    """Paces repeated looks within ``seconds`` in all: the first delays are short, so a
    change soon after the first look is seen soon; they double up to a cap, so a long
    wait costs few reads. ``first`` and ``longest`` set that pace: a reader that may
    wait a long time looks less often than one that waits a moment."""

    def __init__(
        self,
        seconds: float,
        longest: float = LAST_POLL_SECONDS,
        *,
        first: float = FIRST_POLL_SECONDS,
    ) -> None:
        self.deadline = time.monotonic() + seconds
        self.longest = longest
        self._delay = first

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def next_delay(self, cap: float | None = None) -> float:
        """The delay before the next look (at most ``cap``, never past the deadline)."""
        delay = min(self._delay, self.remaining(), self.longest if cap is None else cap)
        self._delay = min(self._delay * 2, self.longest)
        return max(0.0, delay)

    def sleep(self, cap: float | None = None) -> bool:
        """Sleep before the next look; False, without sleeping, once the time is up."""
        if self.remaining() <= 0:
            return False
        time.sleep(self.next_delay(cap))
        return True
