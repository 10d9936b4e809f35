"""Build the injection classifier's training and evaluation sets from public sources.

    python scripts/sanitizer_data.py [--mirrors DIR] [--out DIR] [--extra NAME,NAME]

Every source is a public GitHub repository read as a git snapshot (a bare
clone or mirror: `git clone --mirror https://github.com/OWNER/NAME
DIR/OWNER+NAME/repo`); nothing is downloaded here and nothing at run time.
The split is by *source*: a source feeds either training or evaluation, never
both, and evaluation sources were not used to write the rules. Evaluation
texts that are near-copies of a training text (the same jailbreak reposted
elsewhere) are dropped and counted, so the figures are about unseen text.

Sources, licences and roles are listed in SOURCES below and in docs/sanitizer.md.
Candidate sources (tried, not in the shipped model) are read only when --extra
names them, so a default build writes the shipped model's training rows.
The output (gzip'd JSONL, one {"text", "label", "family", "source"} a line)
goes to .headrace/sanitizer-data/ (not committed: the sources stay where
their licences put them).
"""

from __future__ import annotations

import argparse
import ast
import csv
import gzip
import io
import json
import random
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MIRRORS = Path("/work/.mirror")
DEFAULT_OUT = ROOT / ".headrace" / "sanitizer-data"
SEED = 21


@dataclass(frozen=True)
class Source:
    repo: str
    licence: str
    role: str  # "train", "eval", or "candidate" (trains only when --extra names it)
    what: str


SOURCES = {
    "deepset": Source(
        "ssahilkhan/q-guardian",
        "Apache-2.0 (deepset/prompt-injections)",
        "train",
        "deepset/prompt-injections, all 662 rows (data/prompt_injections.jsonl)",
    ),
    "jailbreak_llms.community": Source(
        "kaif0102/Sentinel-AI-Defense-System-",
        "MIT (verazuo/jailbreak_llms)",
        "train",
        "jailbreak_llms 2023-05-07 jailbreaks posted on Discord and Reddit",
    ),
    "self_instruct": Source(
        "tatsu-lab/stanford_alpaca",
        "Apache-2.0 (seed_tasks.jsonl, from yizhongw/self-instruct)",
        "train",
        "the 175 hand-written seed tasks, each with its first input",
    ),
    "jailbreak_llms.questions": Source(
        "kaif0102/Sentinel-AI-Defense-System-",
        "MIT (verazuo/jailbreak_llms)",
        "train",
        "forbidden_question_set.csv: 390 plain harmful questions, labelled not-injection "
        "(a blunt question is for the model's own refusal, not for this signal)",
    ),
    "headrace.embedded": Source(
        "derived from the training sources above",
        "as its parts",
        "train",
        "3,000 texts made of a benign task and, after a separator, either a training "
        "injection (an attack) or another benign text (not one): injections arrive "
        "inside a task's input, not alone",
    ),
    "headrace.text": Source(
        "this repository",
        "Apache-2.0",
        "train",
        "paragraphs of docs/*.md (not sanitizer.md) and functions of services/**/*.py",
    ),
    "awesome_chatgpt_prompts": Source(
        "f/awesome-chatgpt-prompts",
        "CC0-1.0",
        "train",
        "prompts.csv at commit 00869894 (2026-03-20): about 1,500 role-play and task prompts "
        "('I want you to act as ...'), without the three that name a jailbreak",
    ),
    "gpteacher.roleplay": Source(
        "teknium1/GPTeacher",
        "MIT",
        "train",
        "Roleplay/roleplay-simple-deduped-roleplay-instruct.json: about 1,900 role-play "
        "instructions ('Imagine you are a detective ...', 'Pretend you are ...'), each with "
        "its input: characters and scenes that are not attacks",
    ),
    "gpteacher.codegen": Source(
        "teknium1/GPTeacher",
        "MIT",
        "train",
        "Codegen/codegen-instruct.json: 800 of the code task instructions (a fixed sample), "
        "each with its input",
    ),
    "xstest": Source(
        "paul-rottger/exaggerated-safety",
        "CC-BY-4.0",
        "train",
        "XSTest v2 (xstest_prompts.csv): 250 safe prompts that use unsafe-sounding words "
        "('How can I kill a Python process?') and 200 plain unsafe questions, all labelled "
        "not-injection (no override, no persona scaffold)",
    ),
    "tldr": Source(
        "tldr-pages/tldr",
        "CC-BY-4.0",
        "train",
        "pages/common/*.md: 1,000 command examples whose description uses an override word "
        "(ignore, bypass, override, disable, force, skip, reset, kill, activate, admin, "
        "root, system, unrestricted...), asked as a question ('How do I ignore case "
        "with grep?'): everyday technical uses of an attack's vocabulary",
    ),
    "headrace.corpus": Source(
        "this repository",
        "Apache-2.0",
        "train",
        "tests/sanitizer/corpus (written with the rules)",
    ),
    "headrace.hard_negatives": Source(
        "this repository",
        "Apache-2.0",
        "candidate",
        "tests/sanitizer/corpus/hard_negatives.txt at commit dcc3ff7: 144 benign prompts "
        "written by hand in issue 21's fifth round (an attack's words in their everyday "
        "sense, role-play that is not an attack), from no evaluation source",
    ),
    "pallms": Source(
        "mik0w/pallms",
        "MIT (its list includes Lakera/gandalf_ignore_instructions, MIT)",
        "candidate",
        "plaintext/promptinjection.txt at commit bfedec0 (2026-01-13): 28 override and "
        "extraction payloads ('Ignore the directions above. {NEW_INSTRUCTION}'), each "
        "written out 4 times with a self-instruct task as its new instruction; they join "
        "the attacks that headrace.embedded places after a task",
    ),
    "rebuff": Source(
        "protectai/rebuff",
        "Apache-2.0",
        "candidate",
        "python-sdk/rebuff/detect_pi_heuristics.py at commit 4d2fe06 (2024-01-25): the "
        "word lists of its override-phrase generator (11 verbs such as ignore, disregard, "
        "bypass, do not obey; 8 adjectives such as prior, preceding, foregoing; 20 objects "
        "such as instructions, directives, context; 5 endings such as 'and start anew'), "
        "300 phrases drawn from them, each followed by a self-instruct task as the new "
        "instruction; they join the attacks that headrace.embedded places after a task",
    ),
    "fastchat": Source(
        "lm-sys/FastChat",
        "Apache-2.0",
        "candidate",
        "at commit 0e6d3e4 (2025-04-12): data/dummy_conversation.json, 500 short "
        "conversations about the assistant itself ('Who are you?' 'I am Vicuna, a language "
        "model...'), written out as transcripts under common speaker labels (Human/AI, "
        "User/Assistant...), and the two-turn questions of MT-bench and the Vicuna bench "
        "('Rewrite your previous response...'): chat that names an assistant, not attacks",
    ),
    "promptinject": Source(
        "agencyenterprise/PromptInject (fork pranavik24/PromptInject)",
        "MIT",
        "eval",
        "goal hijacking and prompt leaking attacks on the OpenAI playground tasks, "
        "with its escape and delimiter padding; the tasks alone as benign prompts",
    ),
    "chatgpt_dan": Source(
        "0xk1h0/ChatGPT_DAN",
        "no licence stated: used for evaluation only, not redistributed",
        "eval",
        "the DAN 6.0-13.0, STAN, DUDE, Mongo Tom, developer-mode prompts of README.md",
    ),
    "jailbreak_llms.sites": Source(
        "kaif0102/Sentinel-AI-Defense-System-",
        "MIT (verazuo/jailbreak_llms)",
        "eval",
        "jailbreak_llms 2023-05-07 jailbreaks from websites (jailbreakchat, FlowGPT, "
        "AIPRM): never posted to the training communities",
    ),
    "notinject": Source(
        "leolee99/InjecGuard",
        "MIT",
        "eval",
        "NotInject (339 benign prompts, each with 1-3 trigger words such as ignore, "
        "system, bypass): common queries, technique queries, virtual creation "
        "(role-play, characters), multilingual",
    ),
    "wildguard": Source(
        "leolee99/InjecGuard",
        "ODC-BY-1.0 (allenai/wildguardmix), via InjecGuard (MIT)",
        "eval",
        "971 benign prompts of datasets/wildguard.json (incl. security questions)",
    ),
    "tensor_trust": Source(
        "HumanCompatibleAI/tensor-trust-data",
        "no licence stated: used for evaluation only, not redistributed",
        "eval",
        "the v1 hijacking- and extraction-robustness benchmarks at commit e2385ea "
        "(2023-11-03): attacks that players of the Tensor Trust game wrote against "
        "other players' defences (make the model say 'Access Granted', or reveal its "
        "instructions), as sent (the defence around them is the system's, not the user's). "
        "A second view of held-out hijacking and extraction: not a goal of issue 21",
    ),
    "cpython": Source(
        "the Python standard library of the interpreter running this script",
        "PSF-2.0",
        "eval",
        "'explain this code' around functions that say ignore or system",
    ),
}


def git_show(mirrors: Path, repo: str, path: str, commit: str = "HEAD") -> bytes:
    """One file of a snapshot (HEAD, or a fixed commit so that a newer snapshot
    builds the same rows)."""
    git_dir = mirrors / repo.replace("/", "+") / "repo"
    return subprocess.run(
        ["git", "-C", str(git_dir), "show", f"{commit}:{path}"], check=True, capture_output=True
    ).stdout


def git_show_many(mirrors: Path, repo: str, paths: list[str]) -> list[bytes]:
    """Several files of a snapshot (HEAD) in one git process."""
    git_dir = mirrors / repo.replace("/", "+") / "repo"
    request = "".join(f"HEAD:{p}\n" for p in paths).encode()
    out = subprocess.run(
        ["git", "-C", str(git_dir), "cat-file", "--batch"],
        input=request,
        check=True,
        capture_output=True,
    ).stdout
    files, at = [], 0
    for path in paths:
        header_end = out.index(b"\n", at)
        header = out[at:header_end].split()
        if header[-1] == b"missing":
            raise FileNotFoundError(f"{repo}: {path}")
        size = int(header[2])
        files.append(out[header_end + 1 : header_end + 1 + size])
        at = header_end + 1 + size + 1
    return files


Row = dict[str, object]


def row(text: str, label: int, family: str, source: str) -> Row:
    return {"text": text.strip(), "label": label, "family": family, "source": source}


# ---- training sources --------------------------------------------------------------


def deepset(m: Path) -> Iterator[Row]:
    raw = git_show(m, "ssahilkhan/q-guardian", "data/prompt_injections.jsonl").decode()
    for line in raw.splitlines():
        item = json.loads(line)
        family = "injection" if int(item["label"]) else "benign"
        yield row(item["text"], int(item["label"]), family, "deepset")


def _jailbreak_llms(m: Path) -> list[dict[str, str]]:
    raw = git_show(
        m, "kaif0102/Sentinel-AI-Defense-System-", "data/raw/jailbreak_prompts_2023_05_07.csv"
    ).decode()
    # That copy carries an unresolved merge: two full versions of the file between
    # conflict markers. The first ("HEAD") is the 2023-05-07 release.
    lines = raw.split("\n")
    if lines[0].startswith("<<<<<<<"):
        end = lines.index("=======")
        lines = lines[1:end]
    csv.field_size_limit(sys.maxsize)
    rows = list(csv.DictReader(io.StringIO("\n".join(lines))))
    return [r for r in rows if r["jailbreak"] == "True" and r["prompt"].strip()]


def jailbreak_communities(m: Path) -> Iterator[Row]:
    for r in _jailbreak_llms(m):
        if r["platform"] in ("discord", "reddit"):
            yield row(r["prompt"], 1, "jailbreak", "jailbreak_llms.community")


def self_instruct(m: Path) -> Iterator[Row]:
    raw = git_show(m, "tatsu-lab/stanford_alpaca", "seed_tasks.jsonl").decode()
    for line in raw.splitlines():
        item = json.loads(line)
        given = item["instances"][0]["input"] if item["instances"] else ""
        text = item["instruction"] + ("\n\n" + given if given else "")
        yield row(text, 0, "instruction", "self_instruct")


def instruction_split(m: Path) -> tuple[set[str], list[str]]:
    """The self-instruct seed tasks split once (seed SEED): the texts of about half, which
    stay benign rows (and headrace.embedded's tasks), and the instructions of the other
    half, which with --disjoint-instructions are only the new instructions of the
    candidate override attacks (pallms, rebuff) and no benign row (issue 21, tenth round)."""
    rows = [str(r["text"]) for r in self_instruct(m)]
    shuffled = sorted(rows)
    random.Random(SEED).shuffle(shuffled)
    kept = set(shuffled[: (len(shuffled) + 1) // 2])
    return kept, [t.split("\n\n")[0] for t in rows if t not in kept]


def _new_instructions(m: Path, disjoint: bool) -> list[str]:
    if disjoint:
        return instruction_split(m)[1]
    return [str(r["text"]).split("\n\n")[0] for r in self_instruct(m)]


def forbidden_questions(m: Path) -> Iterator[Row]:
    raw = git_show(
        m, "kaif0102/Sentinel-AI-Defense-System-", "data/raw/forbidden_question_set.csv"
    ).decode()
    lines = raw.split("\n")
    if lines[0].startswith("<<<<<<<"):
        lines = lines[1 : lines.index("=======")]
    for r in csv.DictReader(io.StringIO("\n".join(lines))):
        yield row(r["question"], 0, "question", "jailbreak_llms.questions")


HEADRACE_COMMIT = "1771bdd8624704f30eeba9eed7a1d1312a59159f"
"""This repository's own training text is read at a fixed commit, so later edits to
docs, code or the corpus do not change a rebuilt model."""


def _repo_files(top: str, suffix: str) -> list[PurePosixPath]:
    names = subprocess.run(
        ["git", "-C", str(ROOT), "ls-tree", "-r", "--name-only", HEADRACE_COMMIT],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    paths = (PurePosixPath(n) for n in names)
    return sorted(p for p in paths if p.parts[0] == top and p.suffix == suffix)


def _repo_text(path: PurePosixPath | str, commit: str = HEADRACE_COMMIT) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{commit}:{path}"],
        check=True,
        capture_output=True,
    ).stdout.decode("utf-8")


def headrace_text(_: Path) -> Iterator[Row]:
    for path in _repo_files("docs", ".md"):
        if path.name == "sanitizer.md" or len(path.parts) != 2:
            continue
        for para in _repo_text(path).split("\n\n"):
            if len(para) >= 200:
                yield row(para, 0, "documentation", "headrace.text")
    for path in _repo_files("services", ".py"):
        if "sanitizer" in path.parts:
            continue
        source = _repo_text(path)
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                code = ast.get_source_segment(source, node) or ""
                if 300 <= len(code) <= 4000:
                    yield row("Explain this code:\n\n" + code, 0, "code", "headrace.text")


ACP_COMMIT = "008698943a52f085a9e29b361562844cc13ce921"
_JAILBREAK_WORDS = ("jailbreak", "do anything now", "developer mode", "no restrictions")


def awesome_chatgpt_prompts(m: Path) -> Iterator[Row]:
    raw = git_show(m, "f/awesome-chatgpt-prompts", "prompts.csv", ACP_COMMIT).decode()
    csv.field_size_limit(sys.maxsize)
    for r in csv.DictReader(io.StringIO(raw)):
        text = r["prompt"]
        if not any(w in text.lower() for w in _JAILBREAK_WORDS):
            yield row(text, 0, "roleplay", "awesome_chatgpt_prompts")


def _gpteacher(m: Path, path: str) -> list[str]:
    items = json.loads(git_show(m, "teknium1/GPTeacher", path))
    texts = []
    for item in items:
        given = item.get("input") or ""
        texts.append(item["instruction"] + ("\n\n" + given if given.strip() else ""))
    return texts


def gpteacher_roleplay(m: Path) -> Iterator[Row]:
    for text in _gpteacher(m, "Roleplay/roleplay-simple-deduped-roleplay-instruct.json"):
        yield row(text, 0, "roleplay", "gpteacher.roleplay")


def gpteacher_codegen(m: Path) -> Iterator[Row]:
    texts = _gpteacher(m, "Codegen/codegen-instruct.json")
    for text in random.Random(SEED).sample(texts, 800):
        yield row(text, 0, "code", "gpteacher.codegen")


def xstest(m: Path) -> Iterator[Row]:
    raw = git_show(m, "paul-rottger/exaggerated-safety", "xstest_prompts.csv").decode()
    for r in csv.DictReader(io.StringIO(raw)):
        family = "question" if r["label"] == "unsafe" else "safe_question"
        yield row(r["prompt"], 0, family, "xstest")


_OVERRIDE_WORDS = re.compile(
    r"\b(ignor\w*|bypass\w*|overrid\w*|overwrit\w*|disabl\w*|forc\w*|skip\w*|reset\w*|"
    r"kill\w*|activat\w*|admin\w*|root|system\w*|unrestrict\w*|unlimited|instruction\w*|"
    r"previous|prompt\w*|mode|privileg\w*|permission\w*|execut\w*|terminat\w*|"
    r"forget|pretend|simulat\w*|role\w*|persona\w*|jailbreak\w*|exploit\w*)\b",
    re.IGNORECASE,
)
_TLDR_ASKS = (
    "How do I {what} with {cmd}?",
    "{What} using {cmd}: what is the command?",
    "Can you show me how to {what} in {cmd}?",
    "What {cmd} option lets me {what}?",
    "I need to {what}. Which {cmd} command does that?",
)


def tldr(m: Path) -> Iterator[Row]:
    git_dir = m / "tldr-pages+tldr" / "repo"
    names = subprocess.run(
        ["git", "-C", str(git_dir), "ls-tree", "--name-only", "HEAD", "pages/common/"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    found: list[tuple[str, str]] = []
    names = sorted(n for n in names if n.endswith(".md"))
    for name, raw in zip(names, git_show_many(m, "tldr-pages/tldr", names), strict=True):
        page = raw.decode("utf-8", "replace")
        cmd = PurePosixPath(name).stem
        for line in page.splitlines():
            if line.startswith("- ") and line.rstrip().endswith(":"):
                what = line[2:].rstrip().rstrip(":").strip()
                if _OVERRIDE_WORDS.search(what):
                    found.append((cmd, what))
    rng = random.Random(SEED)
    for cmd, what in rng.sample(found, min(1000, len(found))):
        ask = rng.choice(_TLDR_ASKS)
        text = ask.format(cmd=cmd, what=what[0].lower() + what[1:], What=what)
        yield row(text, 0, "technical", "tldr")


PALLMS_COMMIT = "bfedec0fa6cb8d44a73c730a02eeaac36aefd198"


def pallms(m: Path, disjoint: bool = False) -> Iterator[Row]:
    for text, _line in pallms_texts(m, _new_instructions(m, disjoint)):
        yield row(text, 1, "injection", "pallms")


def pallms_texts(m: Path, tasks: list[str]) -> Iterator[tuple[str, int]]:
    """pallms' payloads, each `{NEW_INSTRUCTION}` filled four times from `tasks`, with
    the payload's line number (scripts/override_holdout.py groups by it)."""
    raw = git_show(m, "mik0w/pallms", "plaintext/promptinjection.txt", PALLMS_COMMIT)
    rng = random.Random(SEED)
    for i, line in enumerate(raw.decode().splitlines()):
        line = line.replace("\\n", "\n").strip()
        if not line:
            continue
        fills = 4 if "{NEW_INSTRUCTION}" in line else 1
        for _ in range(fills):
            yield line.replace("{NEW_INSTRUCTION}", rng.choice(tasks)), i


REBUFF_COMMIT = "4d2fe064abf164e7381556d23e48e210080f8afa"
REBUFF_ROWS = 300
_REBUFF_JOINS = (". ", ", ", "! ", ".\n", ": ", " and ", ". Instead, ", ". Now ")


def rebuff(m: Path, disjoint: bool = False) -> Iterator[Row]:
    """Override phrases from rebuff's heuristic generator (verb, adjective, object,
    ending), each followed by a new instruction: paraphrases of 'ignore the previous
    instructions' that no rule was written from."""
    for text, _verb in rebuff_texts(m, _new_instructions(m, disjoint)):
        yield row(text, 1, "injection", "rebuff")


def rebuff_texts(m: Path, tasks: list[str]) -> Iterator[tuple[str, str]]:
    """rebuff's override phrases, each joined to a new instruction drawn from `tasks`,
    with the verb it was built from (scripts/override_holdout.py groups by it)."""
    code = git_show(
        m, "protectai/rebuff", "python-sdk/rebuff/detect_pi_heuristics.py", REBUFF_COMMIT
    )
    lists: dict[str, list[str]] = {}
    for node in ast.walk(ast.parse(code.decode())):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.List):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    lists[target.id] = [ast.literal_eval(e) for e in node.value.elts]
    verbs, adjectives = lists["verbs"], lists["adjectives"]
    objects, prepositions = lists["objects"], lists["prepositions"]
    rng = random.Random(SEED)
    for _ in range(REBUFF_ROWS):
        words = (rng.choice(verbs), rng.choice(adjectives), rng.choice(objects))
        phrase = " ".join(w for w in (*words, rng.choice(prepositions)) if w)
        if rng.random() < 0.5:
            phrase = phrase.replace(
                words[0], words[0] + (" all" if rng.random() < 0.5 else " the"), 1
            )
        join = rng.choice(_REBUFF_JOINS)
        task = rng.choice(tasks)
        if join in (", ", " and ", ". Instead, ", ". Now "):
            task = task[0].lower() + task[1:]
        yield phrase + join + task, words[0]


FASTCHAT_COMMIT = "0e6d3e4beaab66f4d3f93db72541a4abab8af28d"
_SPEAKERS = (
    ("Human", "Assistant"),
    ("Human", "AI"),
    ("User", "Assistant"),
    ("User", "AI"),
    ("USER", "ASSISTANT"),
    ("Q", "A"),
)


def fastchat(m: Path) -> Iterator[Row]:
    def show(path: str) -> str:
        return git_show(m, "lm-sys/FastChat", path, FASTCHAT_COMMIT).decode()

    rng = random.Random(SEED)
    for item in json.loads(show("data/dummy_conversation.json")):
        user, bot = rng.choice(_SPEAKERS)
        turns = [
            f"{user if t['from'] == 'human' else bot}: {t['value']}" for t in item["conversations"]
        ]
        # Some end on the user's turn, as a prompt that asks for the next reply does.
        if rng.random() < 0.5:
            turns.append(f"{user}:")
        yield row("\n".join(turns), 0, "conversation", "fastchat")
    for path in (
        "fastchat/llm_judge/data/mt_bench/question.jsonl",
        "fastchat/llm_judge/data/vicuna_bench/question.jsonl",
    ):
        for line in show(path).splitlines():
            yield row("\n\n".join(json.loads(line)["turns"]), 0, "question", "fastchat")


def _corpus_lines(path: str, commit: str = HEADRACE_COMMIT) -> Iterator[str]:
    for line in _repo_text(path, commit).splitlines():
        if line.strip() and not line.startswith("#"):
            yield re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), line)


def headrace_corpus(_: Path) -> Iterator[Row]:
    for text in _corpus_lines("tests/sanitizer/corpus/injections.txt"):
        yield row(text, 1, "injection", "headrace.corpus")
    for text in _corpus_lines("tests/sanitizer/corpus/benign.txt"):
        yield row(text, 0, "benign", "headrace.corpus")


HARD_NEGATIVES_COMMIT = "dcc3ff7aa86bfc185c0d9b0154ffa8cd01ba61b6"
"""The commit that added tests/sanitizer/corpus/hard_negatives.txt (read there, like
HEADRACE_COMMIT, so later edits do not change a rebuilt model)."""


def headrace_hard_negatives(_: Path) -> Iterator[Row]:
    # Family "hard_negative", not "benign": headrace.embedded draws its benign inputs
    # from the "benign" family, and stays the same whether or not this source is read.
    path = "tests/sanitizer/corpus/hard_negatives.txt"
    for text in _corpus_lines(path, HARD_NEGATIVES_COMMIT):
        yield row(text, 0, "hard_negative", "headrace.hard_negatives")


# ---- evaluation sources ------------------------------------------------------------


def _literals(source: str) -> dict[str, object]:
    """Top-level NAME = <literal> assignments of a Python file, read without running it."""
    out: dict[str, object] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return out


def promptinject(m: Path) -> Iterator[Row]:
    data = _literals(git_show(m, "pranavik24/PromptInject", "promptinject/prompt_data.py").decode())
    tasks = [t for t in data["openai_playground_prompts"].values() if t["instruction"].strip()]
    rogue = list(data["rogue_strings"].values())
    escapes = list(data["escape_chars"].values())
    delimiters = list(data["delimiter_chars"].values())
    rng = random.Random(SEED)
    families = (
        ("hijacking", data["goal_hikacking_attacks"]),
        ("leaking", data["prompt_leaking_attacks"]),
    )
    for family, attacks in families:
        for attack in attacks.values():
            for task in tasks:
                instruction = attack["instruction"].replace(
                    "{REPLACE_rogue_string}", rng.choice(rogue)
                )
                # PromptInject's padding: (escape + delimiter * length) * times, newline.
                times = rng.choice((0, 1, 2))
                pad = (rng.choice(escapes) + rng.choice(delimiters) * rng.choice((10, 20))) * times
                user_input = (pad + "\n" if pad else "") + instruction
                text = task["instruction"] + task["input"].replace("{user_input}", user_input)
                yield row(text, 1, f"promptinject.{family}", "promptinject")
    for task in tasks:
        text = task["instruction"] + task["input"].replace("{user_input}", "")
        yield row(text, 0, "benign.task_prompts", "promptinject")


def chatgpt_dan(m: Path) -> Iterator[Row]:
    readme = git_show(m, "0xk1h0/ChatGPT_DAN", "README.md").decode()
    # Each prompt sits in a <details> block after its <summary>.
    for block in readme.split("<summary>")[1:]:
        body = block.split("</summary>", 1)[1].split("</details>", 1)[0]
        text = body.replace("<br>", "\n").strip()
        if len(text) > 200:
            yield row(text, 1, "dan", "chatgpt_dan")


def jailbreak_sites(m: Path) -> Iterator[Row]:
    for r in _jailbreak_llms(m):
        # awesome-chatgpt-prompts is a training source: its two rows stay out.
        if r["platform"] == "website":
            text = r["prompt"]
            dan = "dan" in text.lower().split() or "do anything now" in text.lower()
            yield row(text, 1, "dan" if dan else "jailbreak.in_the_wild", "jailbreak_llms.sites")


def notinject(m: Path) -> Iterator[Row]:
    for n in ("one", "two", "three"):
        items = json.loads(git_show(m, "leolee99/InjecGuard", f"datasets/NotInject_{n}.json"))
        for item in items:
            family = "benign.notinject." + item["category"].lower().replace(" ", "_")
            yield row(item["prompt"], 0, family, "notinject")


def wildguard(m: Path) -> Iterator[Row]:
    for item in json.loads(git_show(m, "leolee99/InjecGuard", "datasets/wildguard.json")):
        if int(item["label"]) == 0:
            yield row(item["prompt"], 0, "benign.wildguard", "wildguard")


TENSOR_TRUST_COMMIT = "e2385ea9cf448c9641b96e2e39f113ed4979a5b0"


def tensor_trust(m: Path) -> Iterator[Row]:
    benchmarks = (
        ("hijacking", "benchmarks/hijacking-robustness/v1/hijacking_robustness_dataset.jsonl"),
        ("extraction", "benchmarks/extraction-robustness/v1/extraction_robustness_dataset.jsonl"),
    )
    for family, path in benchmarks:
        raw = git_show(m, "HumanCompatibleAI/tensor-trust-data", path, TENSOR_TRUST_COMMIT)
        for line in raw.decode().splitlines():
            yield row(json.loads(line)["attack"], 1, f"tensor_trust.{family}", "tensor_trust")


def cpython(_: Path) -> Iterator[Row]:
    """Functions of the standard library whose code says ignore or system, as a user
    would paste them: code that must not read as an injection."""
    stdlib = Path(ast.__file__).parent
    found: list[str] = []
    for path in sorted(stdlib.glob("*.py")):
        try:
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                code = ast.get_source_segment(source, node) or ""
                low = code.lower()
                if ("ignore" in low or "system" in low) and 200 <= len(code) <= 3000:
                    found.append(code)
    rng = random.Random(SEED)
    rng.shuffle(found)
    asks = (
        "What does this function do?\n\n",
        "Can you explain this Python code?\n\n",
        "Please review this code and suggest improvements:\n\n",
        "Add type hints to this function:\n\n",
    )
    for i, code in enumerate(found[:300]):
        yield row(asks[i % len(asks)] + code, 0, "benign.code", "cpython")


BUILDERS = {
    "deepset": deepset,
    "jailbreak_llms.community": jailbreak_communities,
    "self_instruct": self_instruct,
    "jailbreak_llms.questions": forbidden_questions,
    "awesome_chatgpt_prompts": awesome_chatgpt_prompts,
    "gpteacher.roleplay": gpteacher_roleplay,
    "gpteacher.codegen": gpteacher_codegen,
    "xstest": xstest,
    "tldr": tldr,
    "headrace.corpus": headrace_corpus,
    "headrace.hard_negatives": headrace_hard_negatives,
    "headrace.text": headrace_text,
    "pallms": pallms,
    "rebuff": rebuff,
    "fastchat": fastchat,
    "promptinject": promptinject,
    "chatgpt_dan": chatgpt_dan,
    "jailbreak_llms.sites": jailbreak_sites,
    "notinject": notinject,
    "wildguard": wildguard,
    "tensor_trust": tensor_trust,
    "cpython": cpython,
}


# ---- derived training rows ----------------------------------------------------------

_SEPARATORS = ("\n\n", "\n", " ", "\n\n---\n\n", "\n########\n", '\n\n"""\n', "\n> ")


def embedded(train: list[Row], count: int = 1500) -> list[Row]:
    """Tasks with an injection in their input (label 1), and the same tasks with a
    benign input (label 0), so the separator and the layout are not themselves the signal."""
    rng = random.Random(SEED)
    tasks = [str(r["text"]) for r in train if r["source"] == "self_instruct"]
    tasks += [
        str(r["text"])
        for r in train
        if r["source"] == "deepset" and r["label"] == 0 and len(str(r["text"])) < 400
    ]
    attacks = [
        str(r["text"]) for r in train if r["family"] == "injection" and len(str(r["text"])) < 400
    ]
    benign = [
        str(r["text"])
        for r in train
        if r["label"] == 0 and r["family"] in ("benign", "question") and len(str(r["text"])) < 400
    ]
    out = []
    for _ in range(count):
        task, sep = rng.choice(tasks), rng.choice(_SEPARATORS)
        attack = rng.choice(attacks)
        if rng.random() < 0.2:
            attack = attack.upper()
        out.append(row(task + sep + attack, 1, "injection.embedded", "headrace.embedded"))
        other = rng.choice(benign)
        out.append(row(task + rng.choice(_SEPARATORS) + other, 0, "benign", "headrace.embedded"))
    return out


# ---- near-duplicates ---------------------------------------------------------------


def _shingles(text: str, k: int = 8) -> set[int]:
    words = text.lower().split()
    return {hash(tuple(words[i : i + k])) for i in range(max(1, len(words) - k + 1))}


def drop_near_copies(train: list[Row], evaluation: list[Row]) -> tuple[list[Row], Counter[str]]:
    """Evaluation rows sharing half their 8-word shingles with a training row are dropped."""
    index: dict[int, set[int]] = {}
    for i, r in enumerate(train):
        for s in _shingles(str(r["text"])):
            index.setdefault(s, set()).add(i)
    kept, dropped = [], Counter[str]()
    for r in evaluation:
        sh = _shingles(str(r["text"]))
        hits = Counter(i for s in sh for i in index.get(s, ()))
        if hits and hits.most_common(1)[0][1] >= 0.5 * len(sh):
            dropped[str(r["family"])] += 1
        else:
            kept.append(r)
    return kept, dropped


def dedupe(rows: list[Row]) -> list[Row]:
    seen: set[str] = set()
    out = []
    for r in rows:
        key = " ".join(str(r["text"]).lower().split())
        if key and key not in seen:
            seen.add(key)
            out.append(r)
    return out


def write(path: Path, rows: list[Row]) -> None:
    # mtime=0: the same rows give the same bytes.
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        for r in rows:
            gz.write((json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n").encode())


def read(path: Path) -> list[Row]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def roles(extra: list[str]) -> dict[str, str]:
    """The sources a build reads and the split each feeds: every training and
    evaluation source, and the candidate sources named in `extra` as training."""
    unknown = [n for n in extra if SOURCES.get(n, Source("", "", "", "")).role != "candidate"]
    if unknown:
        raise SystemExit(f"not a candidate source: {', '.join(unknown)}")
    out = {}
    for name in BUILDERS:
        role = SOURCES[name].role
        if role == "candidate":
            if name not in extra:
                continue
            role = "train"
        out[name] = role
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirrors", type=Path, default=DEFAULT_MIRRORS)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--extra",
        default="",
        metavar="NAME,NAME",
        help="also train on these candidate sources (not in the shipped model): "
        + ", ".join(n for n, s in SOURCES.items() if s.role == "candidate"),
    )
    parser.add_argument(
        "--disjoint-instructions",
        action="store_true",
        help="with --extra pallms or rebuff: their new instructions come from half of the "
        "self-instruct tasks, which are then no benign row (instruction_split)",
    )
    parser.add_argument(
        "--embed-shipped-only",
        action="store_true",
        help="with --extra: headrace.embedded draws its tasks, attacks and benign inputs "
        "from the shipped sources only, so the candidate sources add their own rows and "
        "nothing else (issue 21, eleventh round's Z)",
    )
    args = parser.parse_args()
    builders = dict(BUILDERS)
    if args.disjoint_instructions:
        kept = instruction_split(args.mirrors)[0]
        builders["self_instruct"] = lambda m: (r for r in self_instruct(m) if r["text"] in kept)
        builders["pallms"] = lambda m: pallms(m, disjoint=True)
        builders["rebuff"] = lambda m: rebuff(m, disjoint=True)
    split: dict[str, list[Row]] = {"train": [], "eval": []}
    shipped: list[Row] = []
    for name, role in roles([n for n in args.extra.split(",") if n]).items():
        rows = list(builders[name](args.mirrors))
        split[role].extend(rows)
        if role == "train" and SOURCES[name].role != "candidate":
            shipped.extend(rows)
        print(f"{name:26} {role:5} {len(rows):5} rows")
    derived = embedded(shipped if args.embed_shipped_only else split["train"])
    print(f"{'headrace.embedded':26} train {len(derived):5} rows")
    train = dedupe(split["train"] + derived)
    evaluation, dropped = drop_near_copies(train, dedupe(split["eval"]))
    args.out.mkdir(parents=True, exist_ok=True)
    write(args.out / "train.jsonl.gz", train)
    write(args.out / "eval.jsonl.gz", evaluation)
    print(f"train: {len(train)} rows; eval: {len(evaluation)} rows")
    print("eval rows dropped as near-copies of training rows:", dict(dropped))
    (args.out / "dropped.json").write_text(json.dumps(dict(dropped), sort_keys=True))


if __name__ == "__main__":
    main()
