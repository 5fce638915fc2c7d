"""Config files as users write them: Python, JSON and YAML read into the same nested dict; a file
that raises, is not UTF-8, has a syntax error or is of another format stops with one line naming
the file, the line and the cause, on every path that reads a config (with --resume too); `~` and
$VARIABLES in the path keys are expanded where the config is read."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import adaptation
import predict
import validate
from tests.conftest import cli, load_tool, tiny_config_overrides
from tools import export
from utils.config import ConfigError, load_config, read_config_file

PYTHON = "config = {'num_steps': 3, 'model': {'type': 'vit_tiny'}, 'opt': {'learning_rate': 0.002}}\n"
YAML = "num_steps: 3\nmodel:\n  type: vit_tiny\nopt:\n  learning_rate: 0.002\n"
JSON = '{"num_steps": 3, "model": {"type": "vit_tiny"}, "opt": {"learning_rate": 0.002}}'


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


# --- the formats read

@pytest.mark.parametrize("name, text", [("c.yaml", YAML), ("c.yml", YAML), ("c.json", JSON),
                                        ("bom.json", b"\xef\xbb\xbf" + JSON.encode())])
def test_yaml_and_json_files_give_the_config_of_the_same_python_file(tmp_path, name, text):
    expected = load_config(write(tmp_path / "c.py", PYTHON))
    assert load_config(write(tmp_path / name, text)) == expected
    assert read_config_file(tmp_path / name) == {"num_steps": 3, "model": {"type": "vit_tiny"},
                                                 "opt": {"learning_rate": 0.002}}


def test_a_python_file_may_declare_its_encoding(tmp_path):
    text = "# -*- coding: latin-1 -*-\nconfig = {'out_dir': 'caf\xe9'}\n"
    path = write(tmp_path / "latin.py", text.encode("latin-1"))
    assert read_config_file(path) == {"out_dir": "café"}


def test_a_yaml_file_is_checked_as_every_config(tmp_path):
    with pytest.raises(ConfigError, match=r"Unknown config key 'opt.learnig_rate' \(from config file '.*c.yaml'\)"
                                          r".*Did you mean 'opt.learning_rate'"):
        load_config(write(tmp_path / "c.yaml", "opt:\n  learnig_rate: 0.1\n"))


# --- files that cannot be read: one line naming the file, the line and the cause

BROKEN = {
    "raises.py": ("import math\nconfig = {'num_steps': undefined}\n",
                  r"Config file '.*raises.py', line 2: NameError: name 'undefined' is not defined "
                  r"\(in `config = \{'num_steps': undefined\}`\)\. Fix that line"),
    "divides.py": ("config = {'num_steps': 1 // 0}\n", r"'.*divides.py', line 1: ZeroDivisionError"),
    "syntax.py": ("config = {'num_steps': 3\n", r"'.*syntax.py', line 1: syntax error \('\{' was never closed\)"),
    "latin.py": ("# caf\xe9\nconfig = {'out_dir': 'caf\xe9'}\n".encode("latin-1"),
                 r"Config file '.*latin.py' is not UTF-8 text \(byte 0xe9 at line 1\); save it as UTF-8"),
    "latin.json": ('{\n"out_dir": "caf\xe9"}'.encode("latin-1"), r"'.*latin.json' is not UTF-8 text \(byte 0xe9 at "
                                                                 r"line 2\)"),
    "latin.yaml": ("num_steps: 3\nout_dir: caf\xe9\n".encode("latin-1"), r"'.*latin.yaml' is not UTF-8 text \(byte "
                                                                         r"0xe9 at line 2\)"),
    "bad.json": ('{"num_steps": 3,\n}', r"Config file '.*bad.json', line 2: not valid JSON \(Expecting property name"),
    "bad.yaml": ("num_steps: 3\nmodel: [vit_tiny\n", r"Config file '.*bad.yaml', line 3: not valid YAML \(expected ',' "
                                                     r"or '\]'"),
    "list.yaml": ("- 1\n- 2\n", r"'.*list.yaml' must hold a YAML mapping of config keys"),
    "yaml.py": (YAML, r"'.*yaml.py', line 2: syntax error \(invalid syntax\) \(in `model:`\)\. It is YAML: name it "
                      r"\.yaml to have it read as YAML\."),
    "c.toml": ("num_steps = 3\n", r"Config file '.*c.toml' is of a format not read here \('.toml'\); pass a "
                                  r"Python file defining a `config` dict \(.py\), a run's config.json, or a YAML file "
                                  r"of config keys \(.yaml, .yml\)"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_broken_config_file_stops_with_its_line_and_cause(tmp_path, name):
    text, message = BROKEN[name]
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path / name, text))


def test_config_file_with_a_syntax_error(tmp_path, capsys):
    config = tmp_path / "my_config.py"
    config.write_text('config = {\n    "num_steps": 10\n    "prompt": "box",\n}\n')
    code, message = cli(adaptation.main, ["--config", str(config), f"out_dir={tmp_path / 'run'}"], capsys)
    assert code == 1 and str(config) in message and "line 2" in message and "Fix that line" in message
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    adaptation.main(tiny_config_overrides(run) + ["num_steps=1", "eval_interval=1"])
    return run


@pytest.mark.parametrize("name", ["raises.py", "syntax.py", "latin.py", "bad.yaml"])
def test_every_script_reads_a_config_file_the_same_way(tmp_path, finished_run, capsys, name):
    """The same line, whichever script reads the file: a new run, a resumed one (its --config was
    not checked before), validate.py, predict.py, tools/export.py, tools/auto_instances.py."""
    text, message = BROKEN[name]
    config = str(write(tmp_path / name, text))
    adapter = str(finished_run / "checkpoints/best-lora.safetensors")
    calls = {
        "adaptation": (adaptation.main, ["--config", config]),
        "adaptation --resume": (adaptation.main, ["--resume", str(finished_run / "checkpoints/last.ckpt"),
                                                  "--config", config]),
        "validate": (validate.main, ["--config", config, "--ckpt", adapter]),
        "predict": (predict.main, ["--config", config, "--ckpt", adapter, "--images", str(tmp_path),
                                   "--box", "1,1,5,5", "--out", str(tmp_path / "masks")]),
        "export": (export.main, ["--config", config, "--ckpt", adapter, "--out", str(tmp_path / "merged.pth")]),
        "auto_instances": (load_tool("auto_instances").main, ["--config", config]),
    }
    before = sorted(finished_run.rglob("*"))
    for script, (main, argv) in calls.items():
        code, said = cli(main, argv, capsys)
        assert code == 1 and said.startswith("Error: ") and "Traceback" not in said, script
        assert len(said.splitlines()) == 1 and re.search(message, said), (script, said)
    assert sorted(finished_run.rglob("*")) == before and not (tmp_path / "masks").exists()


# --- ~ and environment variables in the path keys

def test_home_and_variables_in_path_keys_are_expanded_where_the_config_is_read(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WESAM_DATA", str(tmp_path / "data"))
    cfg = load_config(write(tmp_path / "c.yaml", "out_dir: ~/runs/x\ndataset:\n  root: $WESAM_DATA/kvasir\n"),
                      ["model.checkpoint=${WESAM_DATA}/sam.pth", "auto.cache=~/cache"])
    assert cfg.out_dir == str(tmp_path / "home/runs/x")
    assert cfg.dataset.root == str(tmp_path / "data/kvasir")
    assert cfg.model.checkpoint == str(tmp_path / "data/sam.pth") and cfg.auto.cache == str(tmp_path / "home/cache")
    assert load_config(overrides=["prompt=box"]).out_dir == "runs/default"  # a plain path stays as written


def test_an_unset_variable_in_a_path_is_refused_naming_it(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("WESAM_UNSET", raising=False)
    with pytest.raises(ConfigError, match=r"Config key 'out_dir' \(from config file '.*c.py'\): '\$WESAM_UNSET/x' uses "
                                          "the environment variable WESAM_UNSET, which is not set"):
        load_config(write(tmp_path / "c.py", "config = {'out_dir': '$WESAM_UNSET/x'}\n"))
    with pytest.raises(SystemExit):  # a path option: argparse's one line
        validate.parse_args(["--out", "$WESAM_UNSET/m.json"])
    assert "argument --out: '$WESAM_UNSET/m.json' uses the environment variable WESAM_UNSET" in capsys.readouterr().err
