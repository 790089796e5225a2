"""Stop strings with OpenAI's meaning, applied to text that may still contain them.

TGI keeps a matched stop string in its output, and only notices one that a token
completes (an end-anchored match after each token). The contract promises the text
before the stop, so the adapter cuts at the stop string that is complete first (the one
that ends first, as every engine checks after each token; of two ending together, the
longer), from where it starts, wherever that falls inside a token. So the cut does not
depend on how the text was split into tokens or stream events. While streaming it holds back only the trailing
characters that could still begin a stop string (fewer than the longest one) and
releases them as soon as they cannot; with no stop strings nothing is ever held.
"""

from __future__ import annotations

from collections.abc import Sequence


def first_stop(text: str, stops: Sequence[str]) -> tuple[int, str] | None:
    """Where the stop string complete first in `text` starts, and that string; or None."""
    found = [(i + len(s), i, s) for s in stops if s and (i := text.find(s)) >= 0]
    if not found:
        return None
    _, at, stop = min(found)
    return at, stop


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, str]:
    """(`text` before its first stop string, that stop string or "" if none was found)."""
    found = first_stop(text, stops)
    return (text, "") if found is None else (text[: found[0]], found[1])


def _held_length(text: str, stops: Sequence[str]) -> int:
    """Length of the longest proper prefix of a stop string that `text` ends with."""
    best = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:k]):
                best = k
                break
    return best


class StopTrimmer:
    """Streamed text in, text safe to relay out; nothing from the first stop string on."""

    __slots__ = ("_pending", "_stops", "matched")

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._pending = ""
        #: The stop string found ("" until one is): the relayed text is then complete.
        self.matched = ""

    @property
    def stopped(self) -> bool:
        """A stop string was found: the relayed text is complete."""
        return bool(self.matched)

    def push(self, text: str) -> str:
        """The text that can be relayed now, given `text` just arrived."""
        if self.stopped:
            return ""
        if not self._stops:
            return text
        pending = self._pending + text
        found = first_stop(pending, self._stops)
        if found is not None:
            self.matched = found[1]
            self._pending = ""
            return pending[: found[0]]
        held = _held_length(pending, self._stops)
        self._pending = pending[len(pending) - held :]
        return pending[: len(pending) - held]

    def flush(self) -> str:
        """What is still held, at the end of the output (no stop string completed it)."""
        if self.stopped:
            return ""
        rest, self._pending = self._pending, ""
        return rest
