"""Resuming an adaptation run: its config (the run's, with what the user changes), the keys that
cannot change, and the pasteable command lines that the messages give."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, Sequence

from box import Box

from configs.base_config import base_config
from engine.checkpoint import checkpoint_config
from engine.run import run_folder
from utils.config import (ConfigError, config_value, flatten, load_config, parse_override, read_config_file,
                          update_config)

# Keys whose change would not fit the saved weights, would start writing over another run, or would
# score later evaluations unlike Direct (model.decoding).
FIXED_ON_RESUME = ("model.type", "lora.rank", "lora.targets", "teacher.mode", "model.decoding", "out_dir")


def adaptation_command(*arguments: str | Path) -> str:
    """The command line `python adaptation.py ARGUMENTS`, quoted to be pasted into a shell as it is."""
    return shlex.join(["python", "adaptation.py", *map(str, arguments)])


def check_resumable(saved: dict[str, Any], cfg: dict[str, Any], source: str) -> None:
    """ConfigError when `cfg` (from `source`) changes a key of FIXED_ON_RESUME of the run's `saved` config.
    A key newer than the run has its default there, which does what the run did (lora.targets: q and v)."""
    before, now = flatten(base_config) | flatten(saved), flatten(cfg)
    for key in FIXED_ON_RESUME:
        if now[key] != before[key]:
            instead = ("give out_dir=... on the command line to continue the run in another folder" if key == "out_dir"
                       else "start a new run in another out_dir instead")
            raise ConfigError(f"{key} cannot change when resuming ({source} gives {now[key]!r}, the run has "
                              f"{before[key]!r}); {instead}.")


def resume_config(checkpoint: str | Path, overrides: Sequence[str] = (), config_file: str | Path | None = None) -> Box:
    """The config of the run of `checkpoint` (a last.ckpt) with what the user gives, applied in this
    order: the keys of the run's config.json edited since it was written, the keys `config_file`
    sets, then `overrides`. Each change is printed; one of FIXED_ON_RESUME is refused naming where
    it came from. The run continues in the folder of its checkpoint, <run>/checkpoints/, even if
    that was moved or copied (the out_dir of its config.json is the old place: not a change), or
    in the folder out_dir= of `overrides` names. A checkpoint outside a run folder needs that
    out_dir: its folder holds no run, and its files are not the run's to replace."""
    checkpoint = Path(checkpoint)
    saved = checkpoint_config(checkpoint)
    run = run_folder(checkpoint)
    moved = [config_value(key, value, "the command line") for key, value in map(parse_override, overrides)
             if key == "out_dir"]
    if run is None and not moved:
        instead = adaptation_command("--resume", checkpoint, f"out_dir={checkpoint.parent / 'resumed'}", *overrides)
        raise ConfigError(f"Checkpoint '{checkpoint}' is not in a run folder (<run>/checkpoints/ beside "
                          f"<run>/config.json): '{checkpoint.parent.parent}' holds no run, and a resumed run would "
                          f"write over its files. Continue the run in a folder of its own: {instead}")
    out_dir = moved[-1] if moved else str(run)
    cfg = load_config(user_config=dict(saved, out_dir=out_dir), source=f"checkpoint '{checkpoint}'")
    given = []
    if run is not None:
        edited = flatten(read_config_file(run / "config.json"))
        given.append((f"'{run / 'config.json'}'", {k: v for k, v in edited.items() if k != "out_dir"}))
    if config_file:
        given.append((f"--config '{config_file}'", flatten(read_config_file(config_file))))
    given.append(("the command line", flatten(dict(parse_override(text) for text in overrides))))
    for source, values in given:
        current = flatten(cfg)
        changes = {key: value for key, value in values.items()
                   if current.get(key) != config_value(key, value, source)}
        cfg = update_config(cfg, changes, source)
        check_resumable(dict(saved, out_dir=out_dir), cfg, source)
        for key, value in changes.items():
            print(f"Resuming with {key}={value!r} (the run had {current.get(key)!r}; from {source})")
    return cfg
