"""LoRA on q and v of the fused image-encoder `qkv` projections of SAM (ViT blocks) and SAM 2 (Hiera
blocks), as WeSAM: rank r, no scaling, no dropout, A kaiming-uniform, B zero; with named adapters
that can be switched at run time.

One frozen base network serves every role: adapter "student" (trainable), adapter "teacher"
(EMA copy, mode ema) and no adapter at all (the anchor, i.e. the unadapted SAM).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

STUDENT = "student"
TEACHER = "teacher"
Adapter = str | None | tuple[str | None, ...]  # an adapter name, None (no adapter) or one per batch slice


class LoRAPair(nn.Module):
    """Low-rank updates of q and v: dq = up_q(down_q(x)), dv = up_v(down_v(x)), in_features -> rank
    -> out_features."""

    def __init__(self, in_features: int, out_features: int, rank: int) -> None:
        super().__init__()
        self.down_q = nn.Linear(in_features, rank, bias=False)  # default init: kaiming_uniform(a=sqrt(5))
        self.up_q = nn.Linear(rank, out_features, bias=False)
        self.down_v = nn.Linear(in_features, rank, bias=False)
        self.up_v = nn.Linear(rank, out_features, bias=False)
        nn.init.zeros_(self.up_q.weight)
        nn.init.zeros_(self.up_v.weight)


class LoRAQKV(nn.Module):
    """Fused qkv Linear (in_features -> 3 dim) with the active adapter's low-rank q and v updates.

    Input ... x in_features, output ... x 3 dim = [q + dq, k, v + dv]. SAM's ViT blocks have
    in_features = dim; a Hiera block where the stage changes has in_features = dim / 2, so the
    updates are sized by the output (dim = out_features / 3). `active` names the adapter used;
    None gives the base projection exactly; a tuple of names applies one adapter to each of that
    many equal slices of the batch (dim 0), so differently adapted images share one encoder call.
    """

    def __init__(self, qkv: nn.Linear, rank: int, adapters: tuple[str, ...]) -> None:
        super().__init__()
        self.qkv = qkv
        self.dim = qkv.out_features // 3  # the width of each of q, k and v
        self.adapters = nn.ModuleDict({name: LoRAPair(qkv.in_features, self.dim, rank) for name in adapters})
        self.active: Adapter = adapters[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.qkv(x)
        if not isinstance(self.active, tuple):
            return self._adapt(self.active, x, out)
        # windowed blocks put each image's windows next to each other in dim 0, so equal slices stay images
        slices = zip(self.active, x.chunk(len(self.active)), out.chunk(len(self.active)))
        return torch.cat([self._adapt(name, part, part_out) for name, part, part_out in slices])

    def _adapt(self, name: str | None, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        if name is None:
            return out
        lora = self.adapters[name]
        dim = self.dim
        q, k, v = out[..., :dim], out[..., dim:2 * dim], out[..., 2 * dim:]
        return torch.cat([q + lora.up_q(lora.down_q(x)), k, v + lora.up_v(lora.down_v(x))], dim=-1)


def add_lora(sam: nn.Module, rank: int, adapters: tuple[str, ...] = (STUDENT,),
             blocks: Iterable[nn.Module] | None = None) -> list[LoRAQKV]:
    """Freeze every parameter of `sam` and put LoRA on the `attn.qkv` of every image-encoder block:
    `blocks`, by default SAM's `sam.image_encoder.blocks` (SAM 2 passes its Hiera trunk's blocks).

    Adapters after the first are copies of the first and never receive gradients (EMA teachers).
    """
    for parameter in sam.parameters():
        parameter.requires_grad_(False)
    layers = []
    for block in sam.image_encoder.blocks if blocks is None else blocks:
        layer = LoRAQKV(block.attn.qkv, rank, adapters)
        for name in adapters[1:]:
            layer.adapters[name].load_state_dict(layer.adapters[adapters[0]].state_dict())
            layer.adapters[name].requires_grad_(False)
        block.attn.qkv = layer
        layers.append(layer)
    return layers


def lora_layers(module: nn.Module) -> list[LoRAQKV]:
    return [m for m in module.modules() if isinstance(m, LoRAQKV)]


@contextmanager
def use_adapter(module: nn.Module, name: Adapter) -> Iterator[None]:
    """Run `module` with adapter `name` (None: the unadapted base; a tuple: one per equal batch
    slice, see LoRAQKV) and restore the previous one."""
    layers = lora_layers(module)
    previous = [layer.active for layer in layers]
    for layer in layers:
        layer.active = name
    try:
        yield
    finally:
        for layer, active in zip(layers, previous):
            layer.active = active


def adapter_state_dict(module: nn.Module, name: str = STUDENT) -> dict[str, torch.Tensor]:
    """The weights of one adapter: {"blocks.{i}.{down_q|up_q|down_v|up_v}": tensor}."""
    state = {}
    for index, layer in enumerate(lora_layers(module)):
        for key, value in layer.adapters[name].state_dict().items():
            state[f"blocks.{index}.{key.removesuffix('.weight')}"] = value.detach().clone().contiguous()
    return state


def load_adapter_state_dict(module: nn.Module, state: dict[str, torch.Tensor], name: str = STUDENT) -> None:
    """Load weights written by adapter_state_dict into adapter `name`; shapes must match."""
    layers = lora_layers(module)
    expected = {f"blocks.{i}.{p}" for i in range(len(layers)) for p in ("down_q", "up_q", "down_v", "up_v")}
    if set(state) != expected:
        raise ValueError(f"Adapter has keys for {len({k.split('.')[1] for k in state})} blocks; "
                         f"the model has {len(layers)} LoRA blocks.")
    with torch.no_grad():
        for index, layer in enumerate(layers):
            for part in ("down_q", "up_q", "down_v", "up_v"):
                target = getattr(layer.adapters[name], part).weight
                source = state[f"blocks.{index}.{part}"]
                if source.shape != target.shape:
                    raise ValueError(f"Adapter weight blocks.{index}.{part} has shape {tuple(source.shape)}; "
                                     f"the model expects {tuple(target.shape)} (different lora.rank or model.type?).")
                target.copy_(source)


@torch.no_grad()
def ema_update(module: nn.Module, rate: float, source: str = STUDENT, target: str = TEACHER) -> None:
    """target = rate * target + (1 - rate) * source, for every LoRA weight."""
    for layer in lora_layers(module):
        for src, dst in zip(layer.adapters[source].parameters(), layer.adapters[target].parameters()):
            dst.lerp_(src, 1.0 - rate)


@torch.no_grad()
def merged_state_dict(sam: nn.Module, name: str = STUDENT) -> dict[str, torch.Tensor]:
    """The state dict of a SAM (or SAM 2) with LoRA as a plain one's: adapter `name` merged into each
    image-encoder qkv weight (3 dim x in_features: W_q += B_q A_q, W_v += B_v A_v, W_k and the
    biases unchanged), the official key names, no LoRA keys. Its masks equal those of `sam` with
    adapter `name`; `sam` itself is left unchanged."""
    state = {}
    for key, value in sam.state_dict().items():
        if ".attn.qkv.adapters." not in key:
            state[key.replace(".attn.qkv.qkv.", ".attn.qkv.")] = value.detach().clone()
    for module_name, module in sam.named_modules():
        if isinstance(module, LoRAQKV):
            lora, dim = module.adapters[name], module.dim
            weight = state[f"{module_name}.weight"]
            weight[:dim] += lora.up_q.weight @ lora.down_q.weight
            weight[2 * dim:] += lora.up_v.weight @ lora.down_v.weight
    return state
