"""A tiny llama-architecture GGUF for fast tests, written with the `gguf` package.

Random (seeded, so deterministic) F32 weights, 2 layers, 64-wide, and a
SentencePiece-style vocabulary of the 256 byte-fallback tokens plus printable
ASCII pieces, so any text tokenizes and detokenizes. The end-of-sequence row of
the output matrix is zero, so its logit (0) is never the largest among hundreds
of random ones: greedy decoding runs to max_tokens, which keeps tests exact.
It loads in milliseconds and decodes thousands of tokens a second on a CPU.
"""

from __future__ import annotations

import string
import sys
from pathlib import Path

import numpy as np
from gguf import GGUFWriter, TokenType

N_EMBD = 64
N_LAYER = 2
N_HEAD = 4
N_FF = 128
N_CTX = 1024
SEED = 20261125


def _vocab() -> tuple[list[str], list[float], list[int]]:
    tokens = ["<unk>", "<s>", "</s>"]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [TokenType.BYTE] * 256
    pieces = ["▁"] + [c for c in string.ascii_letters + string.digits + string.punctuation]
    pieces += ["▁" + c for c in string.ascii_lowercase]
    pieces += ["é", "ü", "ß", "日本", "→", "▁café"]  # multi-byte characters
    pieces += ["▁the", "▁and", "▁of", "▁to", "▁is", "▁in", "▁it", "▁world", "▁story"]
    tokens += pieces
    types += [TokenType.NORMAL] * len(pieces)
    # Longer pieces score higher, so the tokenizer prefers them.
    scores = [0.0] * (3 + 256) + [float(len(p)) - 10.0 for p in pieces]
    return tokens, scores, [int(t) for t in types]


def write_tiny_model(path: Path) -> Path:
    """Write the tiny model to `path` (parent directories are created) and return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tokens, scores, types = _vocab()
    n_vocab = len(tokens)
    rng = np.random.default_rng(SEED)

    def matrix(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    writer = GGUFWriter(str(path), "llama")
    writer.add_name("headrace-tiny-test-model")
    writer.add_context_length(N_CTX)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(0)  # all F32
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)

    writer.add_tensor(
        "token_embd.weight", rng.standard_normal((n_vocab, N_EMBD)).astype(np.float32)
    )
    for i in range(N_LAYER):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"blk.{i}.{name}.weight", matrix(N_EMBD, N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", matrix(N_FF, N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", matrix(N_FF, N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", matrix(N_EMBD, N_FF))
    writer.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    output = matrix(n_vocab, N_EMBD) * 4.0
    output[2] = 0.0  # end-of-sequence: never the greedy choice
    output[0] = output[1] = 0.0
    output[3 : 3 + 256] *= 0.25  # byte-fallback tokens: rare, so text stays readable
    writer.add_tensor("output.weight", output)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


if __name__ == "__main__":
    import llama_cpp

    target = write_tiny_model(Path(sys.argv[1] if len(sys.argv) > 1 else "tiny.gguf"))
    llm = llama_cpp.Llama(model_path=str(target), n_ctx=256, verbose=False)
    out = llm.create_completion("Hello world", max_tokens=32, temperature=0.0)
    print(target, target.stat().st_size, "bytes:", repr(out["choices"][0]["text"]))
