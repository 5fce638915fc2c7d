"""LoRA on the image path of SAM (ViT blocks) and SAM 2 (Hiera blocks), as WeSAM: rank r, no scaling,
no dropout, A kaiming-uniform, B zero; on the layers that a placement names (config lora.targets; the
paper's: q and v of every fused image-encoder `qkv`), with named adapters switched at run time.

A Linear gets up(down(x)) on some of its output rows (q, k and/or v of a fused qkv; the whole output
otherwise); a Conv2d gets up(down(x)) with down a convolution of the layer's kernel, stride and
padding to r channels and up a 1 x 1 convolution to its outputs, so its update is the kernel
up ⊗ down (a sum over r) and merges exactly.

One frozen base network serves every role: adapter "student" (trainable), adapter "teacher"
(EMA copy, mode ema) and no adapter at all (the anchor, i.e. the unadapted SAM), whatever the placement.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

STUDENT = "student"
TEACHER = "teacher"
Adapter = str | None | tuple[str | None, ...]  # an adapter name, None (no adapter) or one per batch slice

# A placement: the path of each adapted layer in the network (as in its state dict) -> the parts of its
# output that are updated: some of QKV (the thirds of a fused qkv Linear, in that order), or () for all.
Placement = dict[str, tuple[str, ...]]
QKV = ("q", "k", "v")
# lora.targets of the encoder blocks, for SAM and SAM 2 alike (blocks_placement); the backbones add
# "patch_embed" and SAM 2 its "stride4" and "stride8" (models/sam1.py, models/sam2.py)
BLOCK_TARGETS = ("qv", "qkv", "proj", "mlp")
DEFAULT_TARGETS = ("qv",)  # the paper's


def block_placement(path: str, block: nn.Module, target: str) -> Placement:
    """The layers of `target` in the encoder block at `path`: "qv" q and v of the attention's fused qkv,
    "qkv" q, k and v, "proj" the attention's output projection, "mlp" every Linear of the block's MLP."""
    if target in ("qv", "qkv"):
        return {f"{path}.attn.qkv": tuple(target)}
    if target == "proj":
        return {f"{path}.attn.proj": ()}
    if target == "mlp":
        return {f"{path}.mlp.{name}": () for name, module in block.mlp.named_modules() if isinstance(module, nn.Linear)}
    raise ValueError(f"Unknown block target '{target}'; choose one of {', '.join(BLOCK_TARGETS)}.")


def blocks_placement(prefix: str, blocks: Sequence[nn.Module], target: str) -> Placement:
    """The layers of `target` (block_placement) in every block of `blocks`, the ModuleList at `prefix`."""
    return {path: parts for index, block in enumerate(blocks)
            for path, parts in block_placement(f"{prefix}.{index}", block, target).items()}


def union(placements: Sequence[Placement]) -> Placement:
    """One placement of all `placements`: a layer named by several is adapted once, on the union of
    their parts (qv and qkv: q, k and v)."""
    merged: Placement = {}
    for placement in placements:
        for path, parts in placement.items():
            joined = set(merged.get(path, ())) | set(parts)
            merged[path] = tuple(part for part in QKV if part in joined)
    return merged


class LoRALayer(nn.Module):
    """A frozen layer `base` with each adapter's low-rank update (subclasses: LoRALinear, LoRAConv2d).

    `active` names the adapter used; None gives the base layer exactly; a tuple of names applies one
    adapter to each of that many equal slices of the batch (dim 0), so differently adapted images share
    one encoder call (windowed blocks put each image's windows next to each other in dim 0, so equal
    slices stay images). `path` is the layer's place in the network, which names its adapter weights.
    """

    def __init__(self, base: nn.Module, path: str, adapters: Sequence[str]) -> None:
        super().__init__()
        self.base = base
        self.path = path
        # built in the order of `adapters`, the teacher's after the student's: the student's weights
        # are drawn as WeSAM has drawn them since its first version
        self.adapters = nn.ModuleDict({name: self.make_update() for name in adapters})
        self.active: Adapter = adapters[0]

    def make_update(self) -> nn.Module:
        """One adapter's weights: modules down* (kaiming-uniform) and up* (zero)."""
        raise NotImplementedError

    def update(self, weights: nn.Module, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The base layer's output `out` of input `x` with adapter `weights`' update added."""
        raise NotImplementedError

    def merge(self, weight: torch.Tensor, name: str) -> None:
        """Add adapter `name`'s update to `weight` (a copy of the base layer's weight), in place."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if not isinstance(self.active, tuple):
            return self._adapt(self.active, x, out)
        slices = zip(self.active, x.chunk(len(self.active)), out.chunk(len(self.active)))
        return torch.cat([self._adapt(name, part, part_out) for name, part, part_out in slices])

    def _adapt(self, name: str | None, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return out if name is None else self.update(self.adapters[name], x, out)


class LoRALinear(LoRALayer):
    """A Linear (in_features -> out_features, input ... x in_features) with low-rank updates of some of
    its outputs: `parts` some of QKV, the thirds of a fused qkv (each out_features / 3 wide: SAM 2's
    stage-change blocks widen there, so the thirds are sized by the output), updated by down_q/up_q,
    down_k/up_k, down_v/up_v; or () for the whole output, updated by down/up (in -> rank -> out)."""

    def __init__(self, base: nn.Linear, path: str, rank: int, adapters: Sequence[str], parts: tuple[str, ...]) -> None:
        width = base.out_features // len(QKV) if parts else base.out_features
        # (suffix of the weights' names, first and last + 1 output row), in output order
        self.spans = [(f"_{part}", QKV.index(part) * width, (QKV.index(part) + 1) * width)
                      for part in QKV if part in parts] or [("", 0, width)]
        self.rank = rank
        super().__init__(base, path, adapters)

    def make_update(self) -> nn.Module:
        weights = nn.Module()
        for suffix, start, stop in self.spans:  # default init: kaiming_uniform(a=sqrt(5)); B zero
            setattr(weights, f"down{suffix}", nn.Linear(self.base.in_features, self.rank, bias=False))
            setattr(weights, f"up{suffix}", nn.Linear(self.rank, stop - start, bias=False))
            nn.init.zeros_(getattr(weights, f"up{suffix}").weight)
        return weights

    def update(self, weights: nn.Module, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        pieces, cursor = [], 0
        for suffix, start, stop in self.spans:
            if cursor < start:
                pieces.append(out[..., cursor:start])
            pieces.append(out[..., start:stop] + getattr(weights, f"up{suffix}")(getattr(weights, f"down{suffix}")(x)))
            cursor = stop
        if cursor < out.shape[-1]:
            pieces.append(out[..., cursor:])
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-1)

    def merge(self, weight: torch.Tensor, name: str) -> None:
        weights = self.adapters[name]
        for suffix, start, stop in self.spans:  # out x in: W[rows] += B A
            weight[start:stop] += getattr(weights, f"up{suffix}").weight @ getattr(weights, f"down{suffix}").weight


class LoRAConv2d(LoRALayer):
    """A Conv2d (in -> out channels, k x k kernel) with the low-rank update up(down(x)): down the layer's
    kernel, stride, padding and dilation to `rank` channels, up a 1 x 1 convolution to its outputs;
    the update's kernel is sum_r up[:, r] down[r] (out x in x k x k)."""

    def __init__(self, base: nn.Conv2d, path: str, rank: int, adapters: Sequence[str]) -> None:
        if base.groups != 1 or base.padding_mode != "zeros":
            raise ValueError(f"LoRA on the convolution {path} needs groups=1 and zero padding.")
        self.rank = rank
        super().__init__(base, path, adapters)

    def make_update(self) -> nn.Module:
        conv = self.base
        weights = nn.Module()
        weights.down = nn.Conv2d(conv.in_channels, self.rank, conv.kernel_size, conv.stride, conv.padding,
                                 conv.dilation, bias=False)
        weights.up = nn.Conv2d(self.rank, conv.out_channels, 1, bias=False)
        nn.init.zeros_(weights.up.weight)
        return weights

    def update(self, weights: nn.Module, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return out + weights.up(weights.down(x))

    def merge(self, weight: torch.Tensor, name: str) -> None:
        weights = self.adapters[name]
        weight += torch.einsum("or,rikl->oikl", weights.up.weight.flatten(1), weights.down.weight)


def lora_layer(module: nn.Module, path: str, rank: int, adapters: Sequence[str], parts: tuple[str, ...]) -> LoRALayer:
    """`module` (a Linear or a Conv2d) at `path` with LoRA of `rank` on `parts` (see Placement)."""
    if isinstance(module, nn.Linear):
        return LoRALinear(module, path, rank, adapters, parts)
    if isinstance(module, nn.Conv2d) and not parts:
        return LoRAConv2d(module, path, rank, adapters)
    raise ValueError(f"LoRA on {path} ({type(module).__name__}, parts {parts}) is not supported.")


def lora_parameters(network: nn.Module, placement: Placement, rank: int) -> int:
    """The weights of one adapter of `rank` on the layers of `placement` in `network` (without LoRA)."""
    modules = dict(network.named_modules())
    total = 0
    for path, parts in placement.items():
        module = modules[path]
        if isinstance(module, nn.Conv2d):
            total += rank * (module.weight[0].numel() + module.out_channels)
        else:
            width = module.out_features // len(QKV) if parts else module.out_features
            total += rank * (module.in_features + width) * max(1, len(parts))
    return total


def add_lora(network: nn.Module, rank: int, placement: Placement,
             adapters: Sequence[str] = (STUDENT,)) -> list[LoRALayer]:
    """Freeze every parameter of `network` and put LoRA of `rank` on each layer of `placement`, in the
    network's module order.

    Adapters after the first are copies of the first and never receive gradients (EMA teachers).
    """
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    modules = dict(network.named_modules())
    missing = [path for path in placement if path not in modules]
    if missing:
        raise ValueError(f"The network has no layer {', '.join(missing)} to put LoRA on.")
    layers = []
    for path in [path for path in modules if path in placement]:
        layer = lora_layer(modules[path], path, rank, adapters, placement[path])
        for name in adapters[1:]:
            layer.adapters[name].load_state_dict(layer.adapters[adapters[0]].state_dict())
            layer.adapters[name].requires_grad_(False)
        parent, _, attribute = path.rpartition(".")
        setattr(modules[parent], attribute, layer)
        layers.append(layer)
    return layers


def add_lora_targets(network: nn.Module, rank: int, placements: dict[str, Placement],
                     adapters: Sequence[str] = (STUDENT,)) -> dict[str, int]:
    """add_lora on the union of `placements` (lora.targets entry -> its layers). Returns the weights of
    one adapter: of each target alone, and under "total" of them all (a layer that several targets
    name counts once)."""
    counts = {target: lora_parameters(network, placement, rank) for target, placement in placements.items()}
    placement = union(list(placements.values()))
    counts["total"] = lora_parameters(network, placement, rank)
    add_lora(network, rank, placement, adapters)
    return counts


def describe_lora(rank: int, counts: dict[str, int], model_type: str) -> str:
    """A line on the LoRA of add_lora_targets' `counts`, e.g. "LoRA rank 4 on qv: 147,456 trainable
    parameters (vit_b)"; with several targets, also what each adds alone."""
    targets = [target for target in counts if target != "total"]
    alone = "; alone: " + ", ".join(f"{target} {counts[target]:,}" for target in targets) if len(targets) > 1 else ""
    return f"LoRA rank {rank} on {', '.join(targets)}: {counts['total']:,} trainable parameters ({model_type}{alone})"


def lora_layers(module: nn.Module) -> list[LoRALayer]:
    return [m for m in module.modules() if isinstance(m, LoRALayer)]


@contextmanager
def use_adapter(module: nn.Module, name: Adapter) -> Iterator[None]:
    """Run `module` with adapter `name` (None: the unadapted base; a tuple: one per equal batch
    slice, see LoRALayer) and restore the previous one."""
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
    """The weights of one adapter: {"<layer path>.<down|up>[_q|_k|_v]": tensor}, e.g.
    "image_encoder.blocks.0.attn.qkv.down_q" (SAM) or "sam_mask_decoder.conv_s0.up" (SAM 2)."""
    state = {}
    for layer in lora_layers(module):
        for key, value in layer.adapters[name].state_dict().items():
            state[f"{layer.path}.{key.removesuffix('.weight')}"] = value.detach().clone().contiguous()
    return state


# the keys of adapters written before lora.targets (always q and v of every block's qkv, in order)
FORMER_KEY = re.compile(r"blocks\.(\d+)\.((?:down|up)_[qv])")


def _from_former_keys(state: dict[str, torch.Tensor], layers: list[LoRALayer]) -> dict[str, torch.Tensor]:
    """`state` with the keys of a former adapter ("blocks.{i}.down_q": the i-th LoRA layer) named by
    layer path; other states as they are. Indices beyond the model's layers stay as they are."""
    if not state or not all(FORMER_KEY.fullmatch(key) for key in state):
        return state
    renamed = {}
    for key, value in state.items():
        index, weight = FORMER_KEY.fullmatch(key).groups()
        renamed[f"{layers[int(index)].path}.{weight}" if int(index) < len(layers) else key] = value
    return renamed


def load_adapter_state_dict(module: nn.Module, state: dict[str, torch.Tensor], name: str = STUDENT) -> None:
    """Load weights written by adapter_state_dict (or by a version before lora.targets) into adapter
    `name`; ValueError unless they are exactly the model's LoRA weights with the same shapes."""
    layers = lora_layers(module)
    state = _from_former_keys(state, layers)
    targets = {f"{layer.path}.{key.removesuffix('.weight')}": weight
               for layer in layers for key, weight in layer.adapters[name].named_parameters()}
    unexpected, missing = sorted(set(state) - set(targets)), sorted(set(targets) - set(state))
    if unexpected or missing:
        found = {key.rpartition(".")[0] for key in state}
        raise ValueError(f"Adapter has weights for {len(found)} layers; the model has {len(layers)} LoRA layers "
                         f"({len(unexpected)} of the adapter's weights have no place in the model"
                         + (f", e.g. {unexpected[0]}" if unexpected else "")
                         + f"; {len(missing)} of the model's are not in the adapter"
                         + (f", e.g. {missing[0]}" if missing else "") + "): different lora.targets or model.type?")
    with torch.no_grad():
        for key, target in targets.items():
            if state[key].shape != target.shape:
                raise ValueError(f"Adapter weight {key} has shape {tuple(state[key].shape)}; "
                                 f"the model expects {tuple(target.shape)} (different lora.rank or model.type?).")
        for key, target in targets.items():
            target.copy_(state[key])


@torch.no_grad()
def ema_update(module: nn.Module, rate: float, source: str = STUDENT, target: str = TEACHER) -> None:
    """target = rate * target + (1 - rate) * source, for every LoRA weight."""
    for layer in lora_layers(module):
        for src, dst in zip(layer.adapters[source].parameters(), layer.adapters[target].parameters()):
            dst.lerp_(src, 1.0 - rate)


def base_state_dict(network: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of `network` without LoRA, whatever its placement: each adapted layer's base
    weights under the layer's own name ("<path>.weight", not "<path>.base.weight"), no adapter weights;
    the network's tensors themselves (not copies)."""
    layers = {layer.path for layer in lora_layers(network)}
    state = {}
    for key, value in network.state_dict().items():
        owner, _, leaf = key.rpartition(".")  # "<path>.base", "weight"
        path, _, role = owner.rpartition(".")
        if path in layers and role == "base":
            state[f"{path}.{leaf}"] = value
        elif not any(key.startswith(f"{layer}.adapters.") for layer in layers):
            state[key] = value
    return state


@torch.no_grad()
def merged_state_dict(network: nn.Module, name: str = STUDENT) -> dict[str, torch.Tensor]:
    """The state dict of a SAM (or SAM 2) with LoRA as a plain one's: adapter `name` merged into the
    weight of each adapted layer (LoRALayer.merge; biases unchanged), the official key names, no LoRA
    keys. Its masks equal those of `network` with adapter `name`; `network` itself is left unchanged."""
    state = {key: value.detach().clone() for key, value in base_state_dict(network).items()}
    for layer in lora_layers(network):
        layer.merge(state[f"{layer.path}.weight"], name)
    return state
