"""A tiny llama-architecture GGUF model for fast tests, written with the `gguf` package.

`write_tiny_model(path)` writes a model of about 0.75 MB that llama.cpp
(llama-cpp-python) loads in milliseconds and decodes at thousands of tokens a
second on a CPU. The weights are random but seeded, so the file - and its
greedy output - is byte-for-byte the same on every run. Nothing is downloaded.

Model: architecture "llama", 2 layers, n_embd 64, 4 heads (4 KV heads), n_ff
128, training context 4096, every tensor F32.

Tokenizer: SentencePiece style (`tokenizer.ggml.model = "llama"`): <unk> (0),
<s> (1, BOS, added to prompts), </s> (2, EOS), the 256 byte-fallback tokens
<0x00>..<0xFF> (type BYTE, ids 3..258), then ordinary pieces: "▁", the
printable ASCII characters, "▁" + a couple of hundred common English words and
every prefix of those (llama.cpp's SPM tokenizer builds a piece by merging
adjacent symbols, so each prefix must itself be a token), and a few suffixes.
There are no non-ASCII ordinary pieces, so any other character goes through
byte fallback; every text tokenizes and detokenizes losslessly.

How the weights are shaped, so that tests are exact and cover the awkward paths:

* Greedy text is word-like: whole-word pieces get the largest output rows,
  single characters smaller ones, merge-only prefixes ("▁wor") the smallest.
* Never end-of-sequence: one embedding dimension is a constant 1 that no layer
  writes to (a bias). The output rows of <unk>, <s>, </s> and of every byte
  token not listed below read it with a large negative weight, so their logits
  are always far below the rest - not chosen greedily, and practically never
  sampled either. Generation always runs to max_tokens (finish reason LENGTH).
* Multi-byte characters from byte tokens: "é" (C3 A9) and "→" (E2 86 92). The
  lead byte is an ordinary candidate. Every non-final byte owns a "previous
  token" dimension that only its embedding sets and no layer writes to, and the
  next byte's output row reads that dimension with a large weight (and the
  negative bias otherwise), so greedy decoding always completes the character.
  Streaming code has to hold back the partial character in between.
"""

from __future__ import annotations

import itertools
import string
import sys
from pathlib import Path

import numpy as np
from gguf import GGUFWriter, TokenType

N_EMBD = 64
N_LAYER = 2
N_HEAD = 4
N_FF = 128
N_CTX_TRAIN = 4096
SEED = 23

UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
FIRST_BYTE_ID = 3  # <0x00>; byte b is token FIRST_BYTE_ID + b
N_BYTES = 256

# Characters that greedy decoding assembles from byte tokens.
BYTE_CHARACTERS = ("é", "→")

# Scales (chosen by looking at the greedy output of a few prompts for this SEED).
WORD_GAIN = 4.5  # output rows of whole-word pieces
CHAR_GAIN = 3.5  # ... of single characters
PREFIX_GAIN = 2.5  # ... of merge-only prefixes
LEAD_GAIN = 6.0  # ... of the first byte of a BYTE_CHARACTERS sequence
LAYER_GAIN = 1.5  # attn_output / ffn_down: how much each layer adds to the residual
MARK = 8.0  # embedding value in a byte's "previous token" dimension
FOLLOW_GAIN = 20.0  # output weight on that dimension for the next byte
NEVER_GAIN = 40.0  # negative output weight on the bias dimension

WORDS = """
the a an and or but if of to in on at by for with from as is are was were be been
it its this that these those there here he she they we you i me my your his her our
their them him us not no yes all any some one two three four five six seven eight
nine ten what when where who why how which do does did done have has had can could
will would shall should may might must go goes went come came see saw look make made
take took give gave get got say said tell told know knew think thought want like love
time day night year way world story man woman child people life hand eye place thing
word name home house water fire light dark sun moon star sky sea tree road city king
good bad new old big small long short high low great little first last other same
own right left hello cat dog bird fish red blue green white black once upon far away
then now soon very much more most many few up down out over under again about into
""".split()

SUFFIXES = ("s", "ed", "ing", "er", "ly", "th", "ion", "'s", "n't")


def _pieces() -> list[str]:
    """Ordinary (NORMAL) pieces in a fixed order, every merge prefix included."""
    pieces: list[str] = ["▁"]
    pieces += list(string.ascii_letters + string.digits + string.punctuation)
    for word in WORDS:
        full = "▁" + word
        pieces += [full[:n] for n in range(2, len(full) + 1)]
    for suffix in SUFFIXES:
        pieces += [suffix[:n] for n in range(2, len(suffix) + 1)]
    return list(dict.fromkeys(pieces))  # drop repeats, keep the first occurrence


def _vocab() -> tuple[list[str], list[float], list[int]]:
    """Token texts, SentencePiece scores and token types (as ints), in id order."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(N_BYTES)]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL]
    types += [TokenType.BYTE] * N_BYTES
    scores = [0.0] * len(tokens)
    pieces = _pieces()
    tokens += pieces
    types += [TokenType.NORMAL] * len(pieces)
    # Log-probability-like scores; longer pieces score higher, so the merges
    # that build whole words win.
    scores += [-10.0 + 0.5 * len(piece) for piece in pieces]
    return tokens, scores, [int(t) for t in types]


def write_tiny_model(path: Path) -> Path:
    """Write the tiny test model to `path` (parent directories are created); return `path`.

    Deterministic: the same bytes on every call. Load it with, for example,
    `llama_cpp.Llama(model_path=str(path), n_ctx=256, verbose=False)`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokens, scores, types = _vocab()
    n_vocab = len(tokens)
    first_piece = FIRST_BYTE_ID + N_BYTES
    rng = np.random.default_rng(SEED)

    def matrix(rows: int, cols: int, gain: float = 1.0) -> np.ndarray:
        return (gain * rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    # Dimensions that no layer writes to: a constant bias, and one "previous
    # token" marker per non-final byte of each BYTE_CHARACTERS sequence.
    free_dims = iter(range(N_EMBD - 1, -1, -1))
    bias_dim = next(free_dims)
    chains = [[FIRST_BYTE_ID + b for b in char.encode("utf-8")] for char in BYTE_CHARACTERS]
    marks = {prev: next(free_dims) for chain in chains for prev in chain[:-1]}
    reserved = [bias_dim, *marks.values()]
    leads = [chain[0] for chain in chains]

    embd = rng.standard_normal((n_vocab, N_EMBD)).astype(np.float32)
    embd[:, reserved] = 0.0
    embd[:, bias_dim] = 1.0
    for prev, dim in marks.items():
        embd[prev, dim] = MARK

    output = np.zeros((n_vocab, N_EMBD), dtype=np.float32)
    words = {"▁" + word for word in WORDS}
    for i in range(first_piece, n_vocab):
        piece = tokens[i]
        gain = WORD_GAIN if piece in words else CHAR_GAIN if len(piece) == 1 else PREFIX_GAIN
        output[i] = matrix(1, N_EMBD, gain)[0]
    for lead in leads:
        output[lead] = matrix(1, N_EMBD, LEAD_GAIN)[0]
    output[:, reserved] = 0.0
    # Control tokens and bytes: always far below the rest...
    output[:first_piece, bias_dim] = -NEVER_GAIN
    output[leads, bias_dim] = 0.0
    # ...except a continuation byte right after the byte before it.
    for chain in chains:
        for prev, nxt in itertools.pairwise(chain):
            output[nxt, marks[prev]] = FOLLOW_GAIN

    def into_residual(rows: int, cols: int) -> np.ndarray:
        """A projection back into the residual stream that leaves `reserved` alone."""
        weight = matrix(rows, cols, LAYER_GAIN)
        weight[reserved] = 0.0
        return weight

    writer = GGUFWriter(str(path), "llama")
    writer.add_name("headrace-tiny-test-model")
    writer.add_context_length(N_CTX_TRAIN)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(0)  # all F32
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(UNK_ID)
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(EOS_ID)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)

    # numpy shapes are (out, in); ggml reads them as ne = (in, out).
    writer.add_tensor("token_embd.weight", embd)
    for i in range(N_LAYER):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v"):
            writer.add_tensor(f"blk.{i}.{name}.weight", matrix(N_EMBD, N_EMBD))
        writer.add_tensor(f"blk.{i}.attn_output.weight", into_residual(N_EMBD, N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", matrix(N_FF, N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", matrix(N_FF, N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", into_residual(N_EMBD, N_FF))
    writer.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    writer.add_tensor("output.weight", output)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


if __name__ == "__main__":
    from headrace.services.runtime.llama_params import load_llama

    target = write_tiny_model(Path(sys.argv[1] if len(sys.argv) > 1 else "tiny.gguf"))
    llm = load_llama(target, n_ctx=256, verbose=False)
    print(f"{target}: {target.stat().st_size} bytes, vocab {llm.n_vocab()}")
    for prompt in ("Hello world", "Tell me a story", "What is 2+2?"):
        out = llm.create_completion(prompt, max_tokens=32, temperature=0.0)
        choice = out["choices"][0]
        print(f"{prompt!r} -> {choice['text']!r} ({choice['finish_reason']})")


def write_tiny_lora(path: Path, rank: int = 4, seed: int = 7) -> Path:
    """A LoRA adapter for the tiny model (attention and output projections of every
    layer), strong enough that greedy output changes when it is applied."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    writer = GGUFWriter(str(path), "llama")
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(rank))
    for layer in range(N_LAYER):
        for name in ("attn_q", "attn_v", "attn_output"):
            # W is (n_out, n_in) as numpy; the delta is B @ A with A (r, n_in), B (n_out, r).
            writer.add_tensor(
                f"blk.{layer}.{name}.weight.lora_a",
                rng.standard_normal((rank, N_EMBD)).astype(np.float32),
            )
            writer.add_tensor(
                f"blk.{layer}.{name}.weight.lora_b",
                rng.standard_normal((N_EMBD, rank)).astype(np.float32),
            )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
