"""Speed and memory of a WeSAM training step and an evaluation forward: the authors' step structure
("reference") against our fast path, side by side in one process, on the same weights and inputs.

    python tools/benchmark_speed.py [--model vit_b|sam2.1_hiera_t|...] [--size 1024] [--device cpu|cuda]
        [--repeats 3]

Modes, each built from the same random weights and run on the same batch:
- reference: the authors' structure: fp32, segment_anything's attention, a deep-copied frozen
  anchor SAM beside the trained one, anchor, teacher and student as separate passes;
- fast: one SAM for all three roles (the anchor is LoRA switched off), model.attention=sdpa (the
  path per shape, precision and gradient mode of models/attention.py attention_path), teacher and
  student views in one batched call (batch_views), bf16 autocast (precision=bf16-mixed) and TF32
  on CUDA and on a CPU with bf16 dot-product instructions (avx512_bf16 or AMX), else fp32;
- fast_fp32: fast without autocast: the defaults (precision=32-true);
- memory_saving: fast with activation checkpointing of the encoder blocks (memory_saving=true).
A family without a choice of attention or without memory_saving (models/family.py Family.attention,
Family.options) lacks reference or memory_saving: SAM 2 has only fast and fast_fp32, the same step (anchor,
teacher and student on one network with LoRA, views batched) on its own attention (the package's,
scaled_dot_product_attention), at its configuration's fixed input size (no Family.build_at_size).
Measurements are interleaved (reference, fast, memory_saving, reference, ...) and the median of
--repeats is reported. Prints a table and writes it to --out (results/speed.md) as the section of
this model and size, the sections of other sizes kept, with the device,
the model FLOPs of a step (torch.utils.flop_counter), the achieved FLOP/s and, on CUDA, the
fraction of the device's bf16 matrix-product peak, measured here. A measurement script: nothing
is asserted.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import gc
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from configs.base_config import base_config  # noqa: E402
from engine.checks import check_outputs, run_main  # noqa: E402
from engine.run import BF16_CPU_FLAGS, cpu_flags, native_bf16  # noqa: E402
from losses.wesam_loss import wesam_loss  # noqa: E402
from models import WeSAM  # noqa: E402
from models.backbones import build_network, family_of, family_of_network, input_sizes, model_types  # noqa: E402
from models.family import Family  # noqa: E402
from models.lora import STUDENT  # noqa: E402
from utils.files import check_output, path_argument, write_text  # noqa: E402

MODES = ("reference", "fast", "fast_fp32", "memory_saving")
LOSS = dict(base_config["loss"])


@dataclass
class Mode:
    """One way of running a step: the trained WeSAM, the separate anchor (reference only), precision."""

    name: str
    model: WeSAM
    anchor: WeSAM | None
    dtype: torch.dtype | None  # autocast dtype, None for fp32

    def autocast(self, device: torch.device):
        return torch.autocast(device.type, dtype=self.dtype, enabled=self.dtype is not None)


def family_modes(family: Family) -> list[str]:
    """The modes a family can run: reference needs segment_anything's attention beside the fast one
    (Family.attention), memory_saving the option."""
    return [name for name in MODES if (name != "reference" or family.attention)
            and (name != "memory_saving" or "memory_saving" in family.options)]


def make_mode(name: str, base: torch.nn.Module, device: torch.device, fast_dtype: torch.dtype | None) -> Mode:
    """Mode `name` on copies of the random network `base` (so every mode has the same weights)."""
    family = family_of_network(base)
    if name not in family_modes(family):
        raise ValueError(f"{family.title} has no mode '{name}'; choose from {', '.join(family_modes(family))}")

    def network(attention: str) -> torch.nn.Module:
        copied = copy.deepcopy(base)
        return family.attention(copied, attention) if family.attention else copied

    if name == "reference":
        model = WeSAM.on(network("sam"), lora_rank=4).to(device)
        anchor = WeSAM.on(network("sam"), lora_rank=0).to(device).requires_grad_(False)
        return Mode(name, model, anchor, None)
    options = {"memory_saving": True} if name == "memory_saving" else {}
    model = WeSAM.on(network("sdpa"), lora_rank=4, batch_views=True, **options)
    return Mode(name, model.to(device), None, None if name == "fast_fp32" else fast_dtype)


def make_batch(size: int, instances: int, device: torch.device, seed: int = 0) -> dict[str, Any]:
    """One image of size x size (weak and strong view) with `instances` random box prompts."""
    generator = torch.Generator().manual_seed(seed)
    corners = torch.rand(instances, 2, 2, generator=generator) * size
    boxes = torch.cat([corners.min(1).values, corners.max(1).values.clamp(min=corners.min(1).values + 8)], 1)
    return {"images": torch.randint(0, 256, (1, 3, size, size), dtype=torch.uint8, generator=generator).to(device),
            "strong": torch.randint(0, 256, (1, 3, size, size), dtype=torch.uint8, generator=generator).to(device),
            "valid": torch.tensor([[0, 0, size, size]], device=device),
            "prompts": [{"boxes": boxes.clamp(max=size).to(device)}]}


def train_step(mode: Mode, batch: dict[str, Any], optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    with mode.autocast(device):
        if mode.anchor is None:
            outputs = mode.model(batch["images"], batch["strong"], batch["valid"], batch["prompts"])
        else:  # the authors' structure: a separate anchor network, then teacher and student passes
            with torch.no_grad():
                anchor = mode.anchor.predict(batch["images"], batch["valid"], batch["prompts"], adapter=None)
            outputs = {"anchor": anchor,
                       "teacher": mode.model.predict(batch["images"], batch["valid"], batch["prompts"], STUDENT),
                       "student": mode.model.predict(batch["strong"], batch["valid"], batch["prompts"], STUDENT)}
    loss, _ = wesam_loss(outputs, LOSS, "shared", mode.model.image_size)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def eval_forward(mode: Mode, batch: dict[str, Any], device: torch.device) -> None:
    with torch.no_grad(), mode.autocast(device):
        mode.model.predict(batch["images"], batch["valid"], batch["prompts"], STUDENT)


class PeakMemory:
    """Peak memory of the work between start() and stop(): CUDA's max_memory_allocated, or on a
    CPU the process's peak RSS (VmHWM, reset through /proc/self/clear_refs)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def start(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed memory back, so the peak starts from now
            Path("/proc/self/clear_refs").write_text("5")

    def stop(self) -> float:
        """GiB."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**30
        status = Path("/proc/self/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))) / 2**20


def timed(function: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    function()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def step_flops(mode: Mode, batch: dict[str, Any], device: torch.device) -> int:
    """Model FLOPs of one training step (forward and backward), counted by torch."""
    optimizer = torch.optim.SGD([p for p in mode.model.parameters() if p.requires_grad], lr=0.0)
    with FlopCounterMode(display=False) as counter:
        train_step(mode, batch, optimizer, device)
    return counter.get_total_flops()


def bf16_peak_tflops(device: torch.device) -> float | None:
    """Measured bf16 matrix-product throughput of a CUDA device (TFLOP/s), the ceiling to compare with."""
    if device.type != "cuda":
        return None
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    seconds = timed(lambda: [a @ b for _ in range(20)], device) / 20
    return 2 * 8192 ** 3 / seconds / 1e12


def profile_table(mode: Mode, batch: dict[str, Any], device: torch.device, rows: int = 12) -> str:
    """The operators that take the time of one training step of `mode`."""
    optimizer = torch.optim.Adam([p for p in mode.model.parameters() if p.requires_grad], lr=1e-4)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profiler:
        train_step(mode, batch, optimizer, device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return profiler.key_averages().table(sort_by=key, row_limit=rows)


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_b", choices=model_types(),
                        help="SAM shape (vit_b, vit_l, vit_h, vit_small, vit_tiny) or SAM 2 model type")
    parser.add_argument("--size", type=int, default=None,
                        help="input size: SAM at any size (random weights; default 1024), SAM 2 only at its "
                             "configuration's (the default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--instances", type=int, default=4, help="box prompts in the image")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions; the median is reported")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed training steps and evaluations before each timed one")
    parser.add_argument("--fast-precision", choices=("fp32", "bf16"), default=None,
                        help="autocast of the fast modes (default: bf16 where native, engine/run.py native_bf16)")
    parser.add_argument("--modes", default=None,
                        help=f"comma-separated subset of {', '.join(MODES)} (SAM 2: of fast, fast_fp32); "
                             "default all")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--profile", action="store_true", help="add the fast mode's operator profile to --out")
    parser.add_argument("--out", type=path_argument, default="results/speed.md")
    args = parser.parse_args(argv)
    out = check_output(args.out, "--out")
    check_outputs([("--out", out)], [])  # its sections are merged into the file: never a run's file
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    family = family_of(args.model)
    known = family_modes(family)
    modes = args.modes.split(",") if args.modes else known
    if unknown := set(modes) - set(known):
        parser.error(f"unknown mode(s) {', '.join(sorted(unknown))} for {args.model}; choose from {', '.join(known)}")
    fixed_size = None if family.build_at_size else input_sizes(args.model)["image_size"]
    if fixed_size and args.size not in (None, fixed_size):
        parser.error(f"{args.model} takes only its configuration's input size, {fixed_size} px "
                     f"(got --size {args.size})")
    size = args.size or fixed_size or 1024
    precision = args.fast_precision or ("bf16" if native_bf16(device.type) else "fp32")
    torch.backends.cuda.matmul.allow_tf32 = True  # the fast path's TF32 (the reference autocasts nothing)
    torch.manual_seed(0)
    load_start = os.getloadavg()[0]
    base = build_network(args.model, image_size=None if fixed_size else size)
    batch = make_batch(size, args.instances, device)
    memory = PeakMemory(device)
    times: dict[str, dict[str, list[float]]] = {m: {"train": [], "eval": [], "memory": []} for m in modes}
    flops = None
    for repeat in range(args.repeats):
        for name in modes:
            mode = make_mode(name, base, device, torch.bfloat16 if precision == "bf16" else None)
            if flops is None:
                flops = step_flops(mode, batch, device)
            optimizer = torch.optim.Adam([p for p in mode.model.parameters() if p.requires_grad], lr=1e-4)
            for _ in range(args.warmup):
                train_step(mode, batch, optimizer, device)
                eval_forward(mode, batch, device)
            memory.start()
            times[name]["train"].append(timed(partial(train_step, mode, batch, optimizer, device), device))
            times[name]["memory"].append(memory.stop())
            times[name]["eval"].append(timed(partial(eval_forward, mode, batch, device), device))
            print(f"repeat {repeat + 1}/{args.repeats} {name:>13}: step {times[name]['train'][-1]:.3f} s, "
                  f"eval {times[name]['eval'][-1]:.3f} s, peak {times[name]['memory'][-1]:.2f} GiB", flush=True)
            del mode, optimizer
    peak = bf16_peak_tflops(device)
    results = {name: {key: statistics.median(values) for key, values in measured.items()}
               for name, measured in times.items()}
    device_name = (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else platform.processor() or platform.machine())
    heading = f"## {args.model} at {size} px, {args.instances} box prompts, batch 1"
    options = ((f" --threads {args.threads}" if args.threads else "") + (f" --modes {args.modes}" if args.modes else "")
               + (f" --fast-precision {args.fast_precision}" if args.fast_precision else ""))
    autocast = " and ".join(name for name in ("fast", "memory_saving") if name in modes) or "no mode"
    lines = [
        heading,
        "",
        (f"Measured by `python tools/benchmark_speed.py --model {args.model} --size {size} "
         f"--device {args.device} --repeats {args.repeats} --warmup {args.warmup}{options}` on {device_name} "
         f"({device.type}, torch {torch.__version__}, {torch.get_num_threads()} threads); {autocast} "
         f"in {precision}; median of {args.repeats} interleaved repetitions. Load average of the machine "
         f"({os.cpu_count()} cores, other work included) at the start and the end: {load_start:.1f}, "
         f"{os.getloadavg()[0]:.1f}."),
        *([bf16_instructions()] if device.type == "cpu" else []),
        f"Model FLOPs of a training step: {flops / 1e12:.3f} TFLOP"
        + (f"; measured bf16 matrix-product peak of the device: {peak:.0f} TFLOP/s." if peak else "."),
        "",
        ("| mode | training step (s) | steps/s | vs reference | eval forward (s) | eval images/s | vs reference "
         "| peak memory (GiB) | vs reference | achieved TFLOP/s" + (" | of bf16 peak |" if peak else " |")),
        "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if peak else ""),
    ]
    reference = results.get("reference")
    for name, r in results.items():
        def ratio(key: str, invert: bool = False, r: dict[str, float] = r) -> str:
            if not reference:
                return "-"
            return f"{(r[key] / reference[key]) if invert else (reference[key] / r[key]):.2f}x"

        achieved = flops / r["train"] / 1e12
        lines.append(f"| {name} | {r['train']:.3f} | {1 / r['train']:.3f} | {ratio('train')} | {r['eval']:.3f} | "
                     f"{1 / r['eval']:.2f} | {ratio('eval')} | {r['memory']:.2f} | {ratio('memory', invert=True)} | "
                     f"{achieved:.3f}" + (f" | {100 * achieved / peak:.1f} % |" if peak else " |"))
    lines += ["", "\"vs reference\": the reference's time over the mode's (speed-up) and the mode's memory over the "
              "reference's" + ("" if reference else " (\"-\": no reference in this run; SAM 2 has none)")
              + ". Peak memory: " + ("CUDA max_memory_allocated." if device.type == "cuda" else
                                              "the process's peak RSS during the step (VmHWM), weights included.")]
    if args.profile and "fast" in modes:
        lines += ["", "### Where the time goes (fast mode, one training step)", "", "```",
                  profile_table(make_mode("fast", base, device, torch.bfloat16 if precision == "bf16" else None),
                                batch, device), "```"]
    section = "\n".join(lines) + "\n"
    print(section)
    write_section(out, heading, section)
    return results


def bf16_instructions() -> str:
    """The line that names this CPU's bf16 instructions (engine/run.py BF16_CPU_FLAGS), or their absence."""
    flags = cpu_flags()
    if flags is None:
        return "CPU instruction flags: not readable here (no /proc/cpuinfo)."
    found = [flag for flag in BF16_CPU_FLAGS if flag in flags]
    named = (f"CPU bf16 instructions: {', '.join(found)}" if found else
             f"CPU bf16 instructions: none of {', '.join(BF16_CPU_FLAGS)} (bf16 emulated)")
    if isa := os.environ.get("ONEDNN_MAX_CPU_ISA"):  # how a CPU without them is measured on one with them
        return f"{named}; oneDNN limited to ONEDNN_MAX_CPU_ISA={isa} (below AVX512_CORE_BF16 it emulates bf16)."
    return f"{named}{' (native bf16)' if found else ''}."


def write_section(out: Path, heading: str, section: str) -> None:
    """Put `section` (starting with the line `heading`) into the Markdown file `out` in place of the
    section with that heading, or after the others; the sections of other models and sizes stay."""
    title = "# Speed and memory: the authors' step structure against the fast path\n"
    text = out.read_text() if out.exists() else title
    start = text.find(heading + "\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(heading))
        text = text[:start] + section + ("\n" + text[end + 1:] if end >= 0 else "")
    write_text(out, text)


if __name__ == "__main__":
    run_main(main)
