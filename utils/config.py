"""Loading, merging and validating configurations.

A configuration is base_config (configs/base_config.py) updated by a user file (a Python file
defining a `config` dict, or a run's saved config.json) and by dotted `key=value` overrides.
Every key is checked against base_config before any work starts.
"""

from __future__ import annotations

import ast
import copy
import difflib
import io
import json
import math
import re
import tokenize
import traceback
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
import yaml
from box import Box

from configs.base_config import CHOICES, PATH_KEYS, RANGES, base_config
from configs.paper.versions import code_settings
from utils.files import expand_path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_FILE = REPO_ROOT / "configs" / "config.py"


class ConfigError(ValueError):
    """A configuration that cannot run: unknown key, wrong type or value."""


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists are leaves."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def flatten_sections(tree: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Mapping]]:
    """Dotted names of the nested sections of a config tree."""
    sections = []
    for key, value in tree.items():
        if isinstance(value, Mapping):
            sections.append((f"{prefix}{key}", value))
            sections.extend(flatten_sections(value, f"{prefix}{key}."))
    return sections


def _unknown_key_error(key: str, source: str) -> ConfigError:
    known = list(flatten(base_config)) + [name for name, _ in flatten_sections(base_config)]
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f" Did you mean '{close[0]}'?" if close else " See configs/base_config.py for every key."
    return ConfigError(f"Unknown config key '{key}' (from {source}).{hint}")


def _check_type(key: str, value: Any, default: Any, source: str) -> Any:
    """Return value converted to the type of default, or raise ConfigError."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, (list, tuple)):
        if isinstance(value, (list, tuple)):
            return list(value)
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
    else:
        return value
    raise ConfigError(
        f"Config key '{key}' (from {source}) must be of type {type(default).__name__}, "
        f"like its default {default!r}; got {value!r} ({type(value).__name__})."
    )


def config_value(key: str, value: Any, source: str) -> Any:
    """`value` of `key` as the config holds it: a path of PATH_KEYS with `~` and $VARIABLES
    expanded (once, here, where every value is read), so every reader and writer agrees on it."""
    if key not in PATH_KEYS or not isinstance(value, str):
        return value
    try:
        return expand_path(value)
    except ValueError as error:
        raise ConfigError(f"Config key '{key}' (from {source}): {error}.") from None


def _set(tree: dict, key: str, value: Any, source: str) -> None:
    """Set a dotted key in tree after checking it exists in base_config and has the right type."""
    defaults = flatten(base_config)
    if key not in defaults:
        section = dict(flatten_sections(base_config)).get(key)
        if section is not None and isinstance(value, Mapping):
            for sub_key, sub_value in value.items():
                _set(tree, f"{key}.{sub_key}", sub_value, source)
            return
        if section is not None:
            raise ConfigError(f"Config key '{key}' (from {source}) is a section; set one of its keys: "
                              + ", ".join(f"{key}.{k}" for k in section))
        raise _unknown_key_error(key, source)
    value = config_value(key, _check_type(key, value, defaults[key], source), source)
    node = tree
    *parents, leaf = key.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value


def parse_override(text: str) -> tuple[str, Any]:
    """'opt.learning_rate=5e-5' -> ('opt.learning_rate', 5e-05). Values are Python literals,
    true/false in any case, or else plain strings; a key whose default is a string takes the text
    as it is (out_dir=2024 is the folder '2024'), one whose default is a list of strings a comma-separated
    list, brackets and quotes optional (lora.targets=qv,stride4)."""
    if "=" not in text:
        raise ConfigError(f"Command-line override '{text}' must be written key=value, e.g. prompt=point.")
    key, raw = (part.strip() for part in text.split("=", 1))
    default = flatten(base_config).get(key)
    if isinstance(default, str):
        return key, raw
    if isinstance(default, list) and default and all(isinstance(item, str) for item in default):
        # a list of names, quoted or not: lora.targets=qv,stride4 or lora.targets=[qv, stride4]
        return key, [name.strip().strip("'\"") for name in raw.strip("[]").split(",") if name.strip()]
    if raw.lower() in ("true", "false"):
        return key, raw.lower() == "true"
    try:
        return key, ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return key, raw


CONFIG_FORMATS = {".py": "Python", ".json": "JSON", ".yaml": "YAML", ".yml": "YAML"}
READ_FORMATS = "a Python file defining a `config` dict (.py), a run's config.json, or a YAML file of config keys " \
    "(.yaml, .yml)"


def _config_text(path: Path, kind: str) -> str:
    """The text of a config file: UTF-8 (a Python file may declare another encoding, PEP 263)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"Config file '{path}' cannot be read ({error.strerror or error}).") from None
    encoding = "utf-8-sig"  # a byte-order mark, as some editors write, is allowed
    if kind == "Python":
        try:
            encoding = tokenize.detect_encoding(io.BytesIO(data).readline)[0]
        except SyntaxError:  # bytes that are not UTF-8 in the first lines: told below, with their line
            pass
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise ConfigError(f"Config file '{path}' is not {encoding.replace('-sig', '').upper()} text (byte "
                          f"0x{data[error.start]:02x} at line {line}); save it as UTF-8.") from None


def _run_python_config(path: Path, text: str) -> Any:
    """The `config` of a Python config file, run in a namespace of its own. A syntax error, or an
    exception while it runs, stops with ConfigError naming the file, the line and the cause."""
    def stop(line: int | None, cause: str, hint: str = "") -> ConfigError:
        lines = text.splitlines()
        where, code = (f", line {line}", f" (in `{lines[line - 1].strip()[:80]}`)") \
            if line and 0 < line <= len(lines) else ("", "")
        return ConfigError(f"Config file '{path}'{where}: {cause}{code}. " + (hint or "Fix that line; the file must "
                           "define a dict named `config` (see configs/config.py)."))

    try:
        code = compile(text, str(path), "exec")
    except SyntaxError as error:
        try:
            as_yaml = yaml.safe_load(text)
        except yaml.YAMLError:
            as_yaml = None
        hint = ("It is YAML: name it .yaml to have it read as YAML." if isinstance(as_yaml, Mapping) and
                set(as_yaml) <= set(base_config) else "")
        raise stop(error.lineno, f"syntax error ({error.msg})", hint) from None
    namespace = {"__file__": str(path), "__name__": "__config__"}
    try:
        exec(code, namespace)
    except Exception as error:  # anything the file raises is a mistake in it: name its line
        lines = [entry.lineno for entry in traceback.extract_tb(error.__traceback__) if entry.filename == str(path)]
        raise stop(lines[-1], f"{type(error).__name__}: {error}") from None
    return namespace.get("config")


def _parse_data_config(path: Path, text: str, kind: str) -> Any:
    """The mapping of a JSON or YAML config file; ConfigError naming the line of a syntax error."""
    if kind == "JSON":
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"Config file '{path}', line {error.lineno}: not valid JSON ({error.msg}).") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark else ""
        cause = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"Config file '{path}'{where}: not valid YAML ({cause}).") from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The config keys of a Python file (its `config` dict), a JSON file (a run's config.json) or a
    YAML file (a mapping, nested as base_config). A file that cannot be read, is not UTF-8, has a
    syntax error or raises while it runs stops with ConfigError naming the file, the line and the cause."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file '{path}' does not exist. Pass {READ_FORMATS}.")
    kind = CONFIG_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise ConfigError(f"Config file '{path}' is of a format not read here ('{path.suffix}'); pass {READ_FORMATS}.")
    text = _config_text(path, kind)
    if kind == "Python":
        config = _run_python_config(path, text)
        if not isinstance(config, Mapping):
            raise ConfigError(f"Config file '{path}' must define a dict named `config` (see configs/config.py).")
    else:
        config = _parse_data_config(path, text, kind)
        if not isinstance(config, Mapping):
            raise ConfigError(f"Config file '{path}' must hold a {kind} mapping of config keys, like a run's "
                              "config.json.")
    return dict(config)


INTERVAL = re.compile(r"([\[(])(\S+), (\S+)([\])])")


def in_words(interval: str) -> str:
    """'[0, inf)' -> '0 or more', '(0, inf)' -> 'more than 0', '(-inf, inf)' -> 'a finite number',
    '[0, 1)' -> 'in [0, 1)'."""
    opening, low, high, _ = INTERVAL.fullmatch(interval).groups()
    if low == "-inf" and high == "inf":
        return "a finite number"
    if high == "inf":
        return f"{low} or more" if opening == "[" else f"more than {low}"
    return f"in {interval}"


def check_range(key: str, value: Any, interval: str, in_list: bool = False) -> None:
    """Raise ConfigError naming `key` unless `value` (one of the key's list when `in_list`) is a
    finite number in `interval` ('[0, 1)'...)."""
    opening, low, high, closing = INTERVAL.fullmatch(interval).groups()
    low, high = float(low), float(high)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    inside = number and math.isfinite(value) and (low <= value if opening == "[" else low < value) and \
        (value <= high if closing == "]" else value < high)
    if not inside:
        shown = f"{value:g}" if isinstance(value, float) else repr(value)
        subject = f"holds {shown}; each of its numbers" if in_list else f"is {shown}; it"
        raise ConfigError(f"Config key '{key}' {subject} must be {in_words(interval)} "
                          "(configs/base_config.py, RANGES).")


def did_you_mean(value: Any, allowed: Iterable[Any]) -> str:
    """" Did you mean 'x'?" with the allowed value closest to `value`, or "" when none is close."""
    close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def choice_error(key: str, value: Any, allowed: Sequence[Any]) -> ConfigError:
    """The error of config key `key` set to `value`, which is not one of `allowed`."""
    return ConfigError(f"Config key '{key}' is {value!r}; allowed values: {', '.join(map(str, allowed))}."
                       + did_you_mean(value, allowed))


def validate(cfg: Mapping[str, Any]) -> None:
    """Check choices (dataset and shift names included; model.type and lora.targets are checked by the
    model registry, models/__init__.py check_model_config) and value ranges; raise ConfigError naming
    the key."""
    flat = flatten(cfg)
    for key, allowed in CHOICES.items():
        if flat[key] not in allowed:
            raise choice_error(key, flat[key], allowed)
    for key, interval in RANGES.items():
        for value in flat[key] if isinstance(flat[key], list) else [flat[key]]:
            check_range(key, value, interval, isinstance(flat[key], list))
    if flat["model.compile"] != "off" and flat["memory_saving"]:
        raise ConfigError("Config keys 'model.compile' and 'memory_saving' cannot be combined: memory_saving runs the "
                          "encoder blocks one by one, outside the compiled encoder. Set one of them off.")
    if flat["precision"] == "16-mixed" and (flat["accelerator"] == "cpu" or not torch.cuda.is_available()):
        raise ConfigError("Config key 'precision' is '16-mixed', which needs CUDA; "
                          "on a CPU use 'bf16-mixed' or '32-true'.")


def load_config(config_file: str | Path | None = None, overrides: Iterable[str] = (),
                user_config: Mapping[str, Any] | None = None, source: str = "checkpoint") -> Box:
    """base_config, updated by `user_config` (a dict from `source`) or else by config_file
    (default configs/config.py), then by key=value overrides."""
    cfg = copy.deepcopy(base_config)
    if user_config is None:
        path = Path(config_file) if config_file else DEFAULT_CONFIG_FILE
        user_config, source = read_config_file(path), f"config file '{path}'"
    explicit = set(flatten(user_config))
    for key, value in user_config.items():
        _set(cfg, key, value, source)
    for text in overrides:
        key, value = parse_override(text)
        _set(cfg, key, value, "command line")
        explicit.update(flatten({key: value}))
    apply_code_version(cfg, explicit)
    validate(cfg)
    return Box(cfg)


def update_config(cfg: Mapping[str, Any], values: Mapping[str, Any], source: str) -> Box:
    """A copy of the complete config `cfg` with the dotted `values` (from `source`) set, each checked
    as a config file's key, and validated again."""
    tree = copy.deepcopy(dict(Box(cfg).to_dict()))
    for key, value in values.items():
        _set(tree, key, value, source)
    validate(tree)
    return Box(tree)


def apply_code_version(cfg: dict[str, Any], explicit: set[str]) -> None:
    """Set the keys of the authors' code version paper.code (configs/paper/versions.py) that are not
    in `explicit`, the keys the config file or the command line set."""
    code, train_images = cfg["paper"]["code"], cfg["paper"]["train_images"]
    if not code:
        return
    if train_images < 1:
        raise ConfigError(f"paper.code={code} needs paper.train_images, the training images of the dataset "
                          "(configs/paper/<dataset>.py set it); got 0.")
    for key, value in code_settings(code, cfg["dataset"]["name"], train_images, cfg["prompt"]).items():
        if key not in explicit:
            _set(cfg, key, value, f"paper.code={code}")


def config_of(config: str | None, checkpoint: str | Path | None) -> str | Path | None:
    """The config a script reads: `config` if given, else the config.json of the run that wrote
    `checkpoint` (<out_dir>/checkpoints/FILE) if it is there, else None (configs/config.py)."""
    if config or not checkpoint:
        return config
    path = Path(checkpoint).resolve().parent.parent / "config.json"
    return path if path.is_file() else None
