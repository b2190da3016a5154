"""The one retry delay: doubling from a first delay, capped, optionally spread."""

from __future__ import annotations


def backoff_seconds(attempt: int, first: float, cap: float, jitter: float | None = None) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based).

    ``first`` doubles per attempt up to ``cap``. With ``jitter`` (a random number in
    [0, 1), drawn by the caller: this package draws none) the delay is scaled by 0.75 to
    1.25, so retries that failed together do not all come back at once.
    """
    base = min(first * 2.0 ** (attempt - 1), cap)
    return base if jitter is None else base * (0.75 + 0.5 * jitter)
