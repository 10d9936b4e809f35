"""llama.cpp's extra buffer types: off where the CPU is known to crash (AMX), on elsewhere,
for every load in the project (engine params and the high-level Llama alike)."""

from __future__ import annotations

from pathlib import Path

import llama_cpp.llama_cpp as low
import pytest

from headrace.services.runtime import llama_params
from headrace.services.runtime.llama_params import (
    choose_extra_bufts,
    cpu_flags,
    load_llama,
    model_params,
)

AMX_XEON = (
    "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C\n"
    "flags\t\t: fpu vme sse sse2 avx avx2 avx512f avx512bw avx512_vnni amx_bf16 amx_tile "
    "amx_int8\n"
)
AVX2_ONLY = "processor\t: 0\nflags\t\t: fpu sse sse2 ssse3 avx fma avx2\n"
AVX512_NO_AMX = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_vnni\n"
GRAVITON = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics sve\n"


def test_cpu_flags_read_x86_flags_and_aarch64_features() -> None:
    assert "amx_tile" in cpu_flags(AMX_XEON)
    assert "avx2" in cpu_flags(AVX2_ONLY)
    assert "asimd" in cpu_flags(GRAVITON)
    assert cpu_flags("") == frozenset()


def test_auto_turns_extra_buffer_types_off_on_an_amx_cpu() -> None:
    choice = choose_extra_bufts("auto", cpu_flags(AMX_XEON))
    assert choice.enabled is False
    assert "amx_tile" in choice.reason


@pytest.mark.parametrize("cpuinfo", [AVX2_ONLY, AVX512_NO_AMX, GRAVITON, ""])
def test_auto_leaves_extra_buffer_types_on_elsewhere(cpuinfo: str) -> None:
    assert choose_extra_bufts("auto", cpu_flags(cpuinfo)).enabled is True


def test_on_and_off_force_the_choice_whatever_the_cpu() -> None:
    assert choose_extra_bufts("on", cpu_flags(AMX_XEON)).enabled is True
    assert choose_extra_bufts("off", cpu_flags(AVX2_ONLY)).enabled is False
    with pytest.raises(ValueError, match="auto, on or off"):
        choose_extra_bufts("maybe", frozenset())  # type: ignore[arg-type]


def test_auto_reads_this_machines_cpuinfo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "cpuinfo"
    fake.write_text(AMX_XEON)
    monkeypatch.setattr(llama_params, "_CPUINFO", fake)
    assert choose_extra_bufts("auto").enabled is False
    fake.write_text(AVX2_ONLY)
    assert choose_extra_bufts("auto").enabled is True


def test_model_params_carry_the_choice_and_the_gpu_layers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = tmp_path / "cpuinfo"
    fake.write_text(AMX_XEON)
    monkeypatch.setattr(llama_params, "_CPUINFO", fake)
    params = model_params(gpu_layers=-1, extra_bufts="auto")
    assert params.use_extra_bufts is False
    assert params.n_gpu_layers == 0x7FFFFFFF
    assert model_params(gpu_layers=3, extra_bufts="on").use_extra_bufts is True


def test_load_llama_passes_the_choice_to_the_high_level_llama_and_restores_defaults(
    tiny_model: Path,
) -> None:
    original = low.llama_model_default_params
    llm = load_llama(tiny_model, extra_bufts="off", n_ctx=128, verbose=False)
    try:
        assert llm.model_params.use_extra_bufts is False
        assert llm.create_completion("Hello", max_tokens=4, temperature=0.0)["choices"]
    finally:
        llm.close()
    assert low.llama_model_default_params is original
    llm = load_llama(tiny_model, extra_bufts="on", n_ctx=128, verbose=False)
    try:
        assert llm.model_params.use_extra_bufts is True
    finally:
        llm.close()


def test_load_llama_restores_defaults_when_the_load_fails(tmp_path: Path) -> None:
    original = low.llama_model_default_params
    with pytest.raises(ValueError):
        load_llama(tmp_path / "missing.gguf", extra_bufts="off", verbose=False)
    assert low.llama_model_default_params is original
