"""Small training sets and the byte-for-byte rebuild check the classifier tests share."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from headrace.services.sanitizer.classifier import InjectionClassifier


def labelled_rows(
    attacks: Sequence[str], benign: Sequence[str], times: int = 3
) -> list[dict[str, object]]:
    """Training rows: each text `times` over, numbered so that no two are equal."""
    out: list[dict[str, object]] = []
    for i, text in enumerate(list(attacks) * times):
        out.append({"text": f"{text} ({i})", "label": 1, "family": "a", "source": "attacks"})
    for i, text in enumerate(list(benign) * times):
        out.append({"text": f"{text} ({i})", "label": 0, "family": "b", "source": "benign"})
    return out


def rebuilt_byte_for_byte(
    tmp: Path, build: Callable[[], InjectionClassifier]
) -> InjectionClassifier:
    """Build twice; assert both saved artefacts are the same bytes; the model, loaded."""
    build().save(tmp / "a.npz")
    build().save(tmp / "b.npz")
    assert (tmp / "a.npz").read_bytes() == (tmp / "b.npz").read_bytes()
    return InjectionClassifier.load(tmp / "a.npz")
