"""A made-up domain for the finetune tests: facts about a fictional company that no
base model can know, each asked in several paraphrases, some held out of training."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

COMPANY = "Quorvane"
TEMPLATES = (
    "Who leads Project {p} at {c}?",
    "Which person is in charge of Project {p}?",
    "Who is the head of {c}'s Project {p}?",
    "Tell me who runs Project {p}.",
    "Who is responsible for Project {p}?",
)
_ONSETS = ("br", "k", "t", "v", "z", "m", "l", "qu", "dr", "s", "n", "f", "gr", "h")
_VOWELS = ("a", "e", "i", "o", "u", "ae", "y")
_CODAS = ("", "n", "r", "l", "x", "s", "th", "nd")


def _word(rng: random.Random, syllables: int) -> str:
    parts = [
        rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables)
    ]
    return "".join(parts).capitalize()


@dataclass(frozen=True)
class Fact:
    project: str
    lead: str  # the made-up answer: one invented name

    def question(self, template: int) -> str:
        return TEMPLATES[template].format(p=self.project, c=COMPANY)

    @property
    def answer(self) -> str:
        return f"{self.lead}."


def facts(n: int, seed: int = 7) -> list[Fact]:
    rng = random.Random(seed)
    out: list[Fact] = []
    projects: set[str] = set()
    while len(out) < n:
        project = _word(rng, 2)
        if project in projects:
            continue
        projects.add(project)
        out.append(Fact(project, _word(rng, 2)))
    return out


def held_out_template(index: int) -> int:
    """Each fact holds out one paraphrase, a different one from fact to fact, so every
    phrasing is seen in training for other facts but never for this one."""
    return index % len(TEMPLATES)


def write_training_data(domain: list[Fact], path: Path) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for i, fact in enumerate(domain):
            for t in range(len(TEMPLATES)):
                if t != held_out_template(i):
                    fh.write(json.dumps({"prompt": fact.question(t), "answer": fact.answer}) + "\n")


def held_out_questions(domain: list[Fact]) -> list[tuple[str, Fact]]:
    return [(fact.question(held_out_template(i)), fact) for i, fact in enumerate(domain)]
