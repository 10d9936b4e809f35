"""Counting tokens without the provider's tokenizer, for providers that send no usage
and for reservations made before a request is sent.

An estimate, on the side of too many: one token per punctuation mark, and one per
four characters of each word (subword tokenizers of English average about four
characters per token; short words are one token). It is used only where the
provider's own count is missing, and then it is what the allowance is charged.
"""

from __future__ import annotations

import math
import re

_PIECES = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def estimate_tokens(text: str) -> int:
    """An upper-leaning estimate of the tokens `text` costs."""
    return sum(math.ceil(len(piece) / 4) for piece in _PIECES.findall(text))
