"""Turning sampled tokens into text that is safe to stream.

Pieces arrive as bytes and may split a UTF-8 character; stop strings may
straddle pieces. TextAssembler releases only whole characters, and holds back
only as many characters as the longest stop string could still need, so a stop
string is never echoed and nothing else is delayed longer than necessary.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class TextAssembler:
    """Incremental detokenizer with stop-string handling for one sequence."""

    def __init__(self, stop: Sequence[str] = ()) -> None:
        self._stop = tuple(s for s in stop if s)
        self._hold = max((len(s) for s in self._stop), default=1) - 1
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self.stopped = False

    def feed(self, piece: bytes) -> str:
        """Add a token's bytes; return the text that can be released now.

        After a stop string matched, `stopped` is True and the returned text is
        everything before it; later calls return "".
        """
        if self.stopped:
            return ""
        text = self._pending + self._decoder.decode(piece)
        if not self._stop:
            self._pending = ""
            return text
        cut = min((i for s in self._stop if (i := text.find(s)) >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._pending = ""
            return text[:cut]
        keep = min(self._hold, len(text))
        self._pending = text[len(text) - keep :]
        return text[: len(text) - keep]

    def finish(self) -> str:
        """The text still held back, at the end of the sequence.

        A character the last token left incomplete (the token budget ran out inside a
        multi-byte character) is dropped, not sent as U+FFFD, as llama-cpp-python's own
        completions drop it (they decode with errors="ignore"): the reply ends at its
        last whole character. Invalid bytes inside the text are still U+FFFD."""
        if self.stopped:
            return ""
        text = self._pending + self._decoder.decode(b"", final=False)
        self._decoder.reset()
        self._pending = ""
        return text
