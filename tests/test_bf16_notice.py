"""precision=bf16-mixed on a CPU that emulates bf16 (no avx512_bf16, AMX or ARM bf16) is several
times slower than fp32: the run says so in one line when it starts (engine/run.py)."""

from __future__ import annotations

import pytest
import torch

import engine.run
import validate
from engine.run import cpu_flags, native_bf16, slow_bf16_notice

X86_LAPTOP = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu sse2 avx avx2 fma\n"
X86_SERVER = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile\n"
ARM_BF16 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


@pytest.mark.parametrize("text, flags", [(X86_LAPTOP, {"fpu", "sse2", "avx", "avx2", "fma"}),
                                         (X86_SERVER, {"fpu", "avx2", "avx512f", "avx512_bf16", "amx_tile"}),
                                         (ARM_BF16, {"fp", "asimd", "sve", "bf16", "i8mm"})])
def test_cpu_flags_are_read_from_x86_and_arm_cpuinfo(tmp_path, text, flags):
    (tmp_path / "cpuinfo").write_text(text)
    assert cpu_flags(tmp_path / "cpuinfo") == flags


def test_cpu_flags_are_none_without_cpuinfo(tmp_path):
    assert cpu_flags(tmp_path / "missing") is None


def set_flags(monkeypatch, flags: set[str] | None) -> None:
    monkeypatch.setattr(engine.run, "cpu_flags", lambda cpuinfo="/proc/cpuinfo": flags)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("flags", [{"avx512_bf16"}, {"amx_bf16"}, {"bf16"}])
def test_a_cpu_with_bf16_instructions_gets_no_notice(monkeypatch, flags):
    set_flags(monkeypatch, flags | {"avx2"})
    assert native_bf16("cpu")
    assert slow_bf16_notice("bf16-mixed", "cpu") is None


@pytest.mark.parametrize("flags, says", [({"avx2", "avx512f"}, "none of avx512_bf16, amx_bf16, bf16"),
                                         (None, "could not be read")])
def test_a_cpu_without_bf16_instructions_is_told_bf16_is_slow(monkeypatch, flags, says):
    set_flags(monkeypatch, flags)
    assert not native_bf16("cpu") and native_bf16("cuda")
    for accelerator in ("cpu", "auto"):  # auto without CUDA runs on the CPU
        notice = slow_bf16_notice("bf16-mixed", accelerator)
        assert notice.startswith("Note: precision=bf16-mixed") and says in notice and "precision=32-true" in notice
        assert "\n" not in notice
    assert slow_bf16_notice("32-true", "cpu") is None


def test_no_notice_on_cuda(monkeypatch):
    set_flags(monkeypatch, {"avx2"})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert slow_bf16_notice("bf16-mixed", "auto") is None and slow_bf16_notice("bf16-mixed", "cuda") is None
    assert slow_bf16_notice("bf16-mixed", "cpu") is not None


@pytest.mark.slow
@pytest.mark.parametrize("flags, printed", [({"avx2"}, True), ({"avx2", "avx512_bf16"}, False)])
def test_validate_says_it_once_when_it_starts(monkeypatch, capsys, tiny_overrides, flags, printed):
    set_flags(monkeypatch, flags)
    validate.main([*tiny_overrides, "precision=bf16-mixed"])
    assert capsys.readouterr().out.count("Note: precision=bf16-mixed") == (1 if printed else 0)
