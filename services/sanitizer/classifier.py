"""The learned prompt-injection signal: a logistic regression over hashed
character and word n-grams, pure numpy, no model download at run time.

The rules (injection.py) know phrases; this model knows the *shape* of an
attack: override wording next to a task, persona set-ups, "developer mode"
framing, long jailbreak scaffolds. It scores a prompt from 0 (benign) to 1
(an attack), and the policy compares the score with the tier's thresholds.

Features are computed with vectorised numpy so that a 4 KB prompt costs a
few dozen microseconds: the text is lower-cased and read as UTF-8 bytes;
every substring we hash (character 3-, 4- and 5-grams, words, word pairs)
gets a position-independent polynomial hash from one prefix-sum array, and
a multiply-shift maps it to one of 2**bits weights. The same function builds
the training matrix (scripts/train_injection_classifier.py), so training and
serving cannot disagree about a feature.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from functools import cache, cached_property, lru_cache
from pathlib import Path

import numpy as np

__all__ = [
    "ARTEFACT",
    "CLASSIFIER_SIGNAL",
    "ClassifierPolicy",
    "HiddenLayer",
    "InjectionClassifier",
    "SignalAction",
    "WordVectors",
    "features",
    "features_at",
    "load_default",
    "load_model",
    "window_spans",
    "word_hashes",
]

CLASSIFIER_SIGNAL = "injection.classifier"
"""The signal's id: in errors, flags, metrics and disabled_rules, like a rule id."""

ARTEFACT = Path(__file__).with_name("data") / "injection_classifier.npz"
"""The trained weights shipped with the sanitizer (built by make train-sanitizer)."""

FEATURE_VERSION = 1
"""Bumped whenever features() changes; a stored model of another version is refused."""

CHAR_NGRAMS = (3, 4, 5)
_P = np.uint64(0x100000001B3)  # odd, so it has an inverse modulo 2**64
_MIX = np.uint64(0x9E3779B97F4A7C15)  # multiply-shift constant (odd)
_SALT_WORD = np.uint64(0x5851F42D4C957F2D)
_SALT_PAIR = np.uint64(0x14057B7EF767814F)
_MAX_BYTES = 1 << 17  # 128 KiB: longer texts are scored on their first and last 64 KiB


def _inverse(p: int) -> int:
    return pow(p, -1, 1 << 64)


@cache
def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """P**i and P**-i modulo 2**64 for i < n (uint64 arithmetic wraps)."""
    with np.errstate(over="ignore"):
        p = np.full(n, _P, dtype=np.uint64)
        q = np.full(n, np.uint64(_inverse(int(_P))), dtype=np.uint64)
        p[0] = q[0] = 1
        return np.multiply.accumulate(p), np.multiply.accumulate(q)


_WORD_BYTE = np.zeros(256, dtype=bool)
for _b in b"abcdefghijklmnopqrstuvwxyz0123456789":
    _WORD_BYTE[_b] = True
_WORD_BYTE[0x80:] = True  # UTF-8 sequences: letters of other scripts
_SPACE = np.zeros(256, dtype=bool)
_SPACE[list(b" \t\n\r\x0b\x0c")] = True


def _bytes(text: str) -> np.ndarray:
    raw = text.lower().encode("utf-8", "replace")
    if len(raw) > _MAX_BYTES:
        half = _MAX_BYTES // 2
        raw = raw[:half] + b" " + raw[-half:]
    b = np.frombuffer(raw, dtype=np.uint8)
    space = _SPACE[b]
    if space.any():
        # Every whitespace run becomes one space, so layout does not change features.
        keep = ~(space & np.concatenate(([True], space[:-1])))
        b = np.where(space, np.uint8(32), b)[keep]
    return b


def _parts(text: str, bits: int) -> list[np.ndarray]:
    """Hashed feature indices of one text, one array per kind of n-gram."""
    return _parts_of(_bytes(text), bits)


def _parts_of(
    b: np.ndarray,
    bits: int,
    word_starts: list[np.ndarray] | None = None,
    raw_words: list[np.ndarray] | None = None,
) -> list[np.ndarray]:
    """_parts() of normalised bytes; the offsets where words start are appended to
    word_starts when it is given (window scores need to know where features stand),
    and the words' own 64-bit hashes to raw_words (what WordVectors looks words up by)."""
    n = len(b)
    if n == 0:
        return []
    ppow, qpow = _powers(_MAX_BYTES + 2)
    shift = np.uint64(64 - bits)
    parts = []
    with np.errstate(over="ignore"):
        # prefix[i] = sum_{j<i} (b[j]+1) * P**-j, so the hash of b[a:e] is
        # (prefix[e] - prefix[a]) * P**a, the same wherever the substring stands.
        prefix = np.zeros(n + 1, dtype=np.uint64)
        np.cumsum((b.astype(np.uint64) + np.uint64(1)) * qpow[:n], out=prefix[1:])
        for k in CHAR_NGRAMS:
            if n >= k:
                # In place: one buffer per n-gram size, no temporaries.
                grams = np.subtract(prefix[k:], prefix[: n + 1 - k])
                np.multiply(grams, ppow[: n + 1 - k], out=grams)
                np.add(grams, np.uint64(k), out=grams)
                parts.append(grams)
        word = _WORD_BYTE[b]
        edges = np.flatnonzero(np.diff(np.concatenate(([False], word, [False])).view(np.int8)))
        if len(edges):
            starts, ends = edges[0::2], edges[1::2]
            if word_starts is not None:
                word_starts.append(starts)
            words = (prefix[ends] - prefix[starts]) * ppow[starts]
            if raw_words is not None:
                raw_words.append(words.copy())
            if len(words) > 1:
                parts.append((words[:-1] * _SALT_PAIR + words[1:]) ^ _SALT_PAIR)
            parts.append(np.bitwise_xor(words, _SALT_WORD, out=words))
        for part in parts:
            np.multiply(part, _MIX, out=part)
            np.right_shift(part, shift, out=part)
        # The indices are below 2**bits: the same bits read as int64, without a copy.
        return [part.view(np.int64) for part in parts]


def features(text: str, bits: int) -> np.ndarray:
    """Hashed feature indices (with repeats) of one text."""
    parts = _parts(text, bits)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.intp)


def word_hashes(text: str) -> np.ndarray:
    """The 64-bit hash of each word of a text (runs of a-z, 0-9 and non-ASCII bytes, after
    lower-casing), in order: the same hashes the classifier's word features start from."""
    found: list[np.ndarray] = []
    _parts_of(_bytes(text), 8, raw_words=found)
    return found[0] if found else np.zeros(0, dtype=np.uint64)


def features_at(text: str, bits: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Hashed feature indices of one text, the byte offset where each starts, and the
    text's length in (normalised) bytes: what window margins are computed from."""
    b = _bytes(text)
    found: list[np.ndarray] = []
    parts = _parts_of(b, bits, found)
    if not parts:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp), len(b)
    n = len(b)
    pos = [np.arange(n + 1 - k) for k in CHAR_NGRAMS if n >= k]
    for starts in found:
        if len(starts) > 1:
            pos.append(starts[:-1])  # word pairs, at their first word
        pos.append(starts)  # words
    return np.concatenate(parts), np.concatenate(pos), n


def window_spans(n: int, size: int, stride: int) -> np.ndarray:
    """(start, end) byte offsets of the windows of a text of n bytes: every `stride`
    bytes a window of `size`, the last one ending at the text's end; none when the
    text fits in one window (the whole text is then its only window)."""
    if n <= size:
        return np.zeros((0, 2), dtype=np.intp)
    starts = np.arange(0, n - size, stride)
    starts = np.append(starts, n - size)
    return np.stack([starts, starts + size], axis=1)


def word_windows(n: int, size: int, stride: int) -> np.ndarray:
    """(start, end) indices of the windows of a run of n words: every `stride` words a
    window of `size`, the last one ending at the last word; one window of all n words
    when they fit in one, none when n is 0 (WordVectors' window signal)."""
    if n == 0:
        return np.zeros((0, 2), dtype=np.intp)
    if n <= size:
        return np.array([[0, n]], dtype=np.intp)
    return window_spans(n, size, stride)


def max_window_mean(values: np.ndarray, size: int, stride: int) -> float:
    """The highest mean of `values` (one a word) over word_windows(); 0.0 for no words.
    A prefix sum makes it O(words) whatever the window size."""
    n = len(values)
    if n == 0:
        return 0.0
    if n <= size:
        return float(values.sum()) / n
    # Every window then holds `size` words: the highest sum, divided once.
    prefix = np.cumsum(values)
    ends = _window_ends(n, size, stride)
    sums = prefix.take(ends) - prefix.take(ends - size, mode="clip")
    sums[0] = prefix[size - 1]  # the first window starts at word 0 (no prefix before it)
    return float(sums.max()) / size


@lru_cache(maxsize=1024)
def _window_ends(n: int, size: int, stride: int) -> np.ndarray:
    """The index of each window's last word (word_windows' ends less one), for n > size."""
    return word_windows(n, size, stride)[:, 1] - 1


_KEY_LOAD = 0.7  # at most this share of a KeyTable's slots hold a key
_KEY_GROUP = 4  # slots per group of keys that share a displacement
_KEY_TRIES = 256  # displacements tried for a group before the build gives up
_MIX2 = np.uint64(0xD6E8FEB86659FD93)  # a second multiply-shift constant (odd)
_STEP = np.uint64(0xBF58476D1CE4E5B9)  # the d-th displacement tried is d times this


@dataclass(frozen=True)
class KeyTable:
    """A one-probe hash table over a sorted array of distinct uint64 keys, for
    WordVectors' word look-up (issue 21, eighth round; a searchsorted before): hash and
    displace. A key's group is (key * _MIX) >> group_shift; each group has a displacement
    chosen at build so that the slots ((key ^ displacement) * _MIX2) >> slot_shift of
    all keys are distinct. A look-up is thus a fixed few vectorised steps per query (two
    multiply-shifts, three gathers from small arrays, one compare), no probing and no
    loop, and find() returns exactly what a searchsorted over the sorted keys gives (each
    found key's index in them). An unused slot holds the first key, whose own slot is
    elsewhere, so a query equal to it is found there and no other query matches it."""

    disp: np.ndarray
    """uint64, one per group: the displacement XORed into its keys."""
    slots: np.ndarray
    """uint64, one per slot: the key placed there."""
    index: np.ndarray
    """uint16 or int32, one per slot: that key's index in the sorted keys."""
    group_shift: int
    slot_shift: int

    @classmethod
    def build(cls, keys: np.ndarray) -> KeyTable:
        keys = np.asarray(keys, dtype=np.uint64)
        n = len(keys)
        if n == 0 or len(np.unique(keys)) != n:
            raise ValueError("word keys must be distinct, and at least one")
        slot_bits = max(2, int(np.ceil(np.log2(n / _KEY_LOAD))))
        group_bits = slot_bits - (_KEY_GROUP.bit_length() - 1)
        slot_shift, group_shift = np.uint64(64 - slot_bits), np.uint64(64 - group_bits)
        group = (keys * _MIX) >> group_shift if group_bits else np.zeros(n, dtype=np.uint64)
        by_group = np.argsort(group, kind="stable")
        bounds = np.flatnonzero(np.diff(group[by_group])) + 1
        members = np.split(by_group, bounds)
        members.sort(key=len, reverse=True)  # stable: the largest groups placed first
        taken = np.zeros(1 << slot_bits, dtype=bool)
        disp = np.zeros(1 << group_bits, dtype=np.uint64)
        slot_of = np.zeros(n, dtype=np.intp)
        tries = np.arange(_KEY_TRIES, dtype=np.uint64) * _STEP  # wraps modulo 2**64
        for mine in members:
            mine_keys = keys[mine]
            for d in tries:
                where = ((mine_keys ^ d) * _MIX2 >> slot_shift).astype(np.intp)
                if not taken[where].any() and len(np.unique(where)) == len(where):
                    taken[where] = True
                    disp[int(group[mine[0]])] = d
                    slot_of[mine] = where
                    break
            else:
                raise ValueError("the keys do not spread over the table's slots")
        slots = np.full(1 << slot_bits, keys[0], dtype=np.uint64)
        slots[slot_of] = keys
        index = np.zeros(1 << slot_bits, dtype=np.uint16 if n <= 1 << 16 else np.int32)
        index[slot_of] = np.arange(n)
        return cls(disp, slots, index, int(group_shift), int(slot_shift))

    def find(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the index in the sorted keys of each hash found, in order; which were found)."""
        hashes = np.asarray(hashes, dtype=np.uint64)
        if self.group_shift < 64:
            group = (hashes * _MIX) >> np.uint64(self.group_shift)
            mixed = hashes ^ self.disp.take(group)
        else:
            mixed = hashes ^ self.disp[0]
        slot = (mixed * _MIX2) >> np.uint64(self.slot_shift)
        found = self.slots.take(slot) == hashes
        return self.index.take(slot[found]).astype(np.intp), found


@dataclass(frozen=True)
class HiddenLayer:
    """A hashed embedding bag with one ReLU layer beside the linear weights (fastText-like):
    each feature index i also selects the row i >> (bits - embed_bits) of `embed`
    (2**embed_bits rows, one column per hidden unit); the rows are summed and divided
    like the linear sum, `bias` added, ReLU, and the units weighed by `out`."""

    embed: np.ndarray
    bias: np.ndarray
    out: np.ndarray

    @property
    def embed_bits(self) -> int:
        return int(self.embed.shape[0]).bit_length() - 1


@dataclass(frozen=True)
class WordVectors:
    """Static word embeddings (distilled from a sentence encoder at build time,
    scripts/distill_word_vectors.py) and a small model over their mean, stacked on the
    n-gram margin: a second signal that knows what words *mean*, so a paraphrase with
    other words lands near the wording it paraphrases.

    A text's vector is the mean of the rows of its words found in `keys` (word_hashes();
    unknown words are skipped, a text with none is the zero vector). The margin is
    `bias + ngram * m + linear . v + out . relu(hidden @ [v, m] + hidden_bias)`, with m the
    n-gram model's margin and v the text's vector (`hidden` may have no rows: a logistic
    stack). Rows are stored as int8 times a per-dimension `scale`.

    With a `window` (size, stride in words that have a row; issue 21, seventh round) the
    margin also adds `window_weight * max over windows of (window_bias + window_linear .
    the window's mean row)`: a logistic model over a few consecutive words, so a
    one-line override in a long task is scored next to its own words, not diluted in
    the mean of the whole prompt."""

    keys: np.ndarray
    """uint64, sorted: the hash of each word that has a row."""
    rows: np.ndarray
    """float32 (len(keys), dims): the dequantised rows."""
    bias: float
    ngram: float
    linear: np.ndarray
    hidden: np.ndarray
    """float32 (units, dims + 1)."""
    hidden_bias: np.ndarray
    out: np.ndarray
    window: tuple[int, int] | None = None
    window_linear: np.ndarray | None = None
    window_bias: float = 0.0
    window_weight: float = 0.0

    @property
    def dims(self) -> int:
        return int(self.rows.shape[1])

    def known(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row index of each word that has one, in text order; which words have one)."""
        if len(hashes) == 0 or len(self.keys) == 0:
            return np.zeros(0, dtype=np.intp), np.zeros(len(hashes), dtype=bool)
        if self._table is not None:
            return self._table.find(hashes)
        at = np.searchsorted(self.keys, hashes)  # keys no table spreads (never real hashes)
        np.minimum(at, len(self.keys) - 1, out=at)
        found = self.keys[at] == hashes
        return at[found], found

    @cached_property
    def _table(self) -> KeyTable | None:
        """keys as a one-probe hash table (see KeyTable), built by from_arrays at load
        (here, on first use, for vectors made otherwise); None for keys it cannot
        spread, which are then binary-searched as before."""
        try:
            return KeyTable.build(self.keys)
        except ValueError:
            return None

    def window_margin(self, values: np.ndarray) -> float:
        """The highest window margin of a text whose known words' rows, dotted with
        window_linear, are `values` (window_bias alone when no word has a row)."""
        assert self.window is not None
        return self.window_bias + max_window_mean(values, *self.window)

    def vector(self, hashes: np.ndarray) -> np.ndarray:
        """The mean row (float64) of the words with these hashes that have one."""
        if len(hashes) == 0 or len(self.keys) == 0:
            return np.zeros(self.dims)
        at, _ = self.known(hashes)
        if len(at) == 0:
            return np.zeros(self.dims)
        return self.rows.take(at, axis=0).sum(axis=0, dtype=np.float64) / len(at)

    def text_vector(self, text: str) -> np.ndarray:
        """vector() of a text's words."""
        return self.vector(word_hashes(text))

    def margin(self, ngram_margin: float, vector: np.ndarray) -> float:
        """The stacked margin of a text with this n-gram margin and word vector."""
        z = self.bias + self.ngram * ngram_margin + float(self.linear @ vector)
        if len(self.out):
            pre = self.hidden[:, :-1] @ vector + self.hidden[:, -1] * ngram_margin
            z += float(self.out @ np.maximum(pre + self.hidden_bias, 0.0))
        return z

    @cached_property
    def _projected(self) -> np.ndarray:
        """Each word's row already multiplied by the stack's weights on the vector (the
        linear weights, then each hidden unit's): the vector enters the stack only
        through these products, and a mean commutes with them, so the sanitizer gathers
        1 + units values per word instead of `dims`."""
        parts = [self.linear[None, :], self.hidden[:, :-1]]
        if self.window is not None and self.window_linear is not None:
            parts.append(self.window_linear[None, :])  # the last column: the window model's
        weights = np.vstack(parts).astype(np.float64)
        return np.ascontiguousarray(self.rows.astype(np.float64) @ weights.T)

    @cached_property
    def _uses_mean(self) -> bool:
        """Whether the whole text's mean vector enters the stack (a window stack may
        weigh only the windows)."""
        return bool(len(self.out)) or bool(np.any(self.linear != 0))

    def text_margin(self, ngram_margin: float, hashes: np.ndarray) -> float:
        """margin() of a text from its word hashes, by way of the projected rows."""
        units = len(self.out)
        mean = np.zeros(1 + units)
        at, _ = self.known(hashes)
        gathered = self._projected.take(at, axis=0)
        if len(at) and self._uses_mean:
            mean = gathered[:, : 1 + units].sum(axis=0) / len(at)
        z = self.bias + self.ngram * ngram_margin + float(mean[0])
        if self.window is not None:
            z += self.window_weight * self.window_margin(gathered[:, -1])
        if units:
            pre = mean[1:] + self.hidden[:, -1] * ngram_margin + self.hidden_bias
            z += float(self.out @ np.maximum(pre, 0.0))
        return z

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays save() stores (rows quantised to int8 with a per-dimension scale)."""
        scale = np.abs(self.rows).max(axis=0) / 127.0
        scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
        return {
            "words_keys": self.keys.astype(np.uint64),
            "words_rows": np.round(self.rows / scale).astype(np.int8),
            "words_scale": scale,
            "words_linear": self.linear.astype(np.float32),
            "words_hidden": self.hidden.astype(np.float32),
            "words_hidden_bias": self.hidden_bias.astype(np.float32),
            "words_out": self.out.astype(np.float32),
            # float32 precision for the reason InjectionClassifier.save() gives.
            "words_head": np.array([self.bias, self.ngram], dtype=np.float32).astype(np.float64),
        } | self._window_arrays()

    def _window_arrays(self) -> dict[str, np.ndarray]:
        if self.window is None or self.window_linear is None:
            return {}
        return {
            "words_window_linear": self.window_linear.astype(np.float32),
            "words_window_head": np.array(
                [self.window_bias, self.window_weight, *self.window], dtype=np.float32
            ).astype(np.float64),
        }

    @classmethod
    def from_arrays(cls, data: object) -> WordVectors:
        get = data.__getitem__  # type: ignore[attr-defined]
        scale = get("words_scale").astype(np.float32)
        bias, ngram = (float(v) for v in get("words_head"))
        window: dict[str, object] = {}
        if "words_window_head" in data:  # type: ignore[operator]
            w_bias, w_weight, size, stride = (float(v) for v in get("words_window_head"))
            window = {
                "window": (int(size), int(stride)),
                "window_linear": get("words_window_linear").astype(np.float32),
                "window_bias": w_bias,
                "window_weight": w_weight,
            }
        vectors = cls(
            get("words_keys").astype(np.uint64),
            get("words_rows").astype(np.float32) * scale,
            bias,
            ngram,
            get("words_linear").astype(np.float32),
            get("words_hidden").astype(np.float32),
            get("words_hidden_bias").astype(np.float32),
            get("words_out").astype(np.float32),
            **window,  # type: ignore[arg-type]
        )
        # The look-up table takes ~0.15 s to build: at load, before the service says
        # SERVING, not in the first prompt it checks.
        _ = vectors._table
        return vectors


@dataclass(frozen=True)
class InjectionClassifier:
    """Logistic regression over features(): score = sigmoid(bias + sum(w) / sqrt(max(n, floor))),
    optionally plus a hidden layer's output (HiddenLayer: out . relu(sum(embed) / sqrt(..) + b)).

    n is the number of features of the text; the floor (meta "norm_floor") keeps
    a few words from weighing like a paragraph: "just print the answer" is
    too little evidence for a verdict either way."""

    weights: np.ndarray
    bias: float
    bits: int
    meta: dict[str, object]
    hidden: HiddenLayer | None = None
    words: WordVectors | None = None
    """Static word vectors stacked on the n-gram margin (off unless trained with them)."""

    @classmethod
    def load(cls, path: Path) -> InjectionClassifier:
        """Read a model written by save(); ValueError if it is of another feature version."""
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("feature_version") != FEATURE_VERSION:
                raise ValueError(
                    f"{path}: feature version {meta.get('feature_version')}, this code reads "
                    f"{FEATURE_VERSION}: retrain with make train-sanitizer"
                )
            bits = int(meta["bits"])
            weights = np.zeros(1 << bits, dtype=np.float32)
            weights[data["index"]] = data["value"].astype(np.float32)
            hidden = None
            if "embed" in data:
                hidden = HiddenLayer(
                    data["embed"].astype(np.float32),
                    data["hidden_bias"].astype(np.float32),
                    data["hidden_out"].astype(np.float32),
                )
            words = WordVectors.from_arrays(data) if "words_keys" in data else None
            return cls(weights, float(meta["bias"]), bits, meta, hidden, words)

    def save(self, path: Path) -> None:
        """Store the nonzero weights (float16) and the metadata, compressed."""
        index = np.flatnonzero(self.weights).astype(np.int32)
        # The bias at float32 precision, as the weights are stored at float16: training
        # sums in float64 round differently by CPU (numpy's SIMD reductions), and the
        # bias came out one last bit apart on an AMD and an Intel machine. Rounded, a
        # rebuild writes the same bytes on both (and scores move by ~1e-9).
        meta = {**self.meta, "bits": self.bits, "bias": float(np.float32(self.bias))}
        meta["feature_version"] = FEATURE_VERSION
        arrays = {
            "index": index,
            "value": self.weights[index].astype(np.float16),
            "meta": np.array(json.dumps(meta, sort_keys=True)),
        }
        if self.hidden is not None:
            arrays["embed"] = self.hidden.embed.astype(np.float16)
            arrays["hidden_bias"] = self.hidden.bias.astype(np.float32)
            arrays["hidden_out"] = self.hidden.out.astype(np.float32)
        if self.words is not None:
            arrays.update(self.words.arrays())
        np.savez_compressed(path, **arrays)  # type: ignore[arg-type]

    def margin(self, text: str) -> float:
        """The log-odds that the text is an injection.

        With a window (meta "window": {"size": bytes, "stride": bytes}) it is the
        highest of the whole text's margin and each window's: a one-line override
        in a long task is then scored next to its own few lines, not diluted by the
        whole prompt."""
        if self.window is not None:
            if self.hidden is not None or self.words is not None:
                raise ValueError("a model with a hidden layer or words scores the whole text only")
            return self._windowed_margin(text, *self.window)
        if self.words is not None:
            raw: list[np.ndarray] = []
            ngram = self._whole_margin(_parts_of(_bytes(text), self.bits, raw_words=raw))
            return self.words.text_margin(ngram, raw[0] if raw else np.zeros(0, dtype=np.uint64))
        return self._whole_margin(_parts(text, self.bits))

    def ngram_margin(self, text: str) -> float:
        """The n-gram model's own margin (without the word vectors stacked on it)."""
        return self._whole_margin(_parts(text, self.bits))

    def _windowed_margin(self, text: str, size: int, stride: int) -> float:
        b = _bytes(text)
        n = len(b)
        spans = window_spans(n, size, stride)
        if len(spans) == 0:
            return self._whole_margin(_parts_of(b, self.bits))
        found: list[np.ndarray] = []
        parts = _parts_of(b, self.bits, found)
        starts = found[0] if found else np.zeros(0, dtype=np.intp)
        chars = sum(1 for k in CHAR_NGRAMS if n >= k)
        # The weight of the features that start at each byte: a character n-gram stands
        # at its own offset, a word pair at its first word's, a word at its own (word
        # offsets are distinct, so a fancy-indexed add is exact). A window's sum is then
        # a difference of one prefix sum, and its feature count a closed form.
        at_byte = np.zeros(n)
        count = 0
        for i, part in enumerate(parts):
            w = self.weights.take(part)
            if i < chars:
                at_byte[: len(w)] += w
            else:
                at_byte[starts[: len(w)]] += w
            count += len(part)
        prefix = np.zeros(n + 1)
        np.cumsum(at_byte, out=prefix[1:])
        bounds = spans.ravel()  # start, end, start, end...
        counts = np.zeros(len(bounds), dtype=np.int64)
        for i, part in enumerate(parts):
            if i < chars:
                counts += np.minimum(bounds, len(part))
            else:
                counts += np.searchsorted(starts[: len(part)], bounds)
        sums = prefix[bounds]
        floor = self.norm_floor
        window_sums = sums[1::2] - sums[0::2]
        window_counts = np.maximum(counts[1::2] - counts[0::2], floor)
        best = float((window_sums / np.sqrt(window_counts)).max())
        return self.bias + max(float(prefix[-1]) / float(np.sqrt(max(count, floor))), best)

    def _whole_margin(self, parts: list[np.ndarray]) -> float:
        count = sum(len(p) for p in parts)
        hidden = self.hidden
        if count == 0:
            if hidden is None:
                return self.bias
            return self.bias + float(hidden.out @ np.maximum(hidden.bias, 0.0))
        norm = float(np.sqrt(max(count, self.norm_floor)))
        total = sum(float(self.weights.take(p).sum()) for p in parts)
        margin = self.bias + total / norm
        if hidden is not None:
            shift = self.bits - hidden.embed_bits
            index = np.concatenate(parts) >> shift
            units = hidden.embed.take(index, axis=0).sum(axis=0, dtype=np.float64) / norm
            margin += float(hidden.out @ np.maximum(units + hidden.bias, 0.0))
        return margin

    @property
    def window(self) -> tuple[int, int] | None:
        """(size, stride) in bytes of the windows scored beside the whole text, or None."""
        window = self.meta.get("window")
        if not isinstance(window, dict):
            return None
        return int(window["size"]), int(window["stride"])

    @property
    def norm_floor(self) -> int:
        """The least feature count a sum is divided by (see the class docstring)."""
        return int(self.meta.get("norm_floor", 1))  # type: ignore[call-overload]

    def score(self, text: str) -> float:
        """The probability (0..1) that the text is an injection."""
        return float(1.0 / (1.0 + np.exp(-self.margin(text))))


@cache
def load_default() -> InjectionClassifier:
    """The shipped model, loaded once per process."""
    return InjectionClassifier.load(ARTEFACT)


def load_model(path: Path) -> InjectionClassifier:
    """A model from an artefact path, loaded once per path and modification time."""
    path = Path(path).resolve()
    return _load_model(path, path.stat().st_mtime_ns)


@cache
def _load_model(path: Path, mtime_ns: int) -> InjectionClassifier:
    return InjectionClassifier.load(path)


class SignalAction(StrEnum):
    """What a signal over its threshold does to a prompt."""

    BLOCK = "block"
    """Refuse it (PERMISSION_DENIED naming the signal)."""
    FLAG = "flag"
    """Let it through, and name the signal in the response and the audit line."""
    ALLOW = "allow"
    """Let it through unmarked (the signal is computed for nothing: turn it off instead)."""


@dataclass(frozen=True)
class ClassifierPolicy:
    """How one tier uses the classifier's score.

    A score at or over `threshold` gets `action`; a score at or over
    `flag_threshold` (and under `threshold`) is flagged; None for a threshold
    means the one chosen when the model was trained.
    """

    action: SignalAction = SignalAction.BLOCK
    threshold: float | None = None
    flag_threshold: float | None = 0.5
    model: InjectionClassifier | None = None
    """The model to use; None means the shipped one."""

    def resolved(self) -> tuple[InjectionClassifier, float, float]:
        """The model, the threshold and the flag threshold in effect."""
        model = self.model if self.model is not None else load_default()
        threshold = self.threshold
        if threshold is None:
            threshold = float(model.meta.get("threshold", 0.5))  # type: ignore[arg-type]
        flag = self.flag_threshold if self.flag_threshold is not None else threshold
        return model, threshold, min(flag, threshold)
