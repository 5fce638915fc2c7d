"""Loading, merging and validating configurations (utils/config.py)."""

from __future__ import annotations

import copy
import json
import math
import re
import runpy
from pathlib import Path

import pytest
import torch
from box import Box

from configs.base_config import CHOICES, RANGES, base_config
from utils.config import (
    DEFAULT_CONFIG_FILE,
    INTERVAL,
    REPO_ROOT,
    ConfigError,
    check_range,
    flatten,
    load_config,
    parse_override,
)


def merged(tree: dict, update: dict) -> dict:
    """tree updated recursively by update, without touching either."""
    out = copy.deepcopy(tree)
    for key, value in update.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) else value
    return out


def write_python_config(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


def test_default_config_file_is_configs_config_py():
    assert DEFAULT_CONFIG_FILE == Path(__file__).resolve().parent.parent / "configs" / "config.py"


def test_load_config_without_arguments_is_base_merged_with_configs_config_py():
    user = runpy.run_path(str(DEFAULT_CONFIG_FILE))["config"]
    cfg = load_config()
    assert isinstance(cfg, Box)
    assert cfg.to_dict() == merged(base_config, user)


@pytest.mark.parametrize("shift", ["glass_blur", "defocus_blur", "medical"])
def test_each_benchmark_domain_config_is_the_default_with_its_own_schedule(shift):
    cfg, default = load_config(REPO_ROOT / "configs" / "shift" / f"{shift}.py"), load_config()
    assert cfg.dataset.synthetic.shift == shift and cfg.out_dir == f"runs/shift/{shift}"
    schedule_keys = {"opt.learning_rate", "opt.decay_steps", "opt.decay_factor", "out_dir", "dataset.synthetic.shift"}
    different = {key for key, value in flatten(cfg.to_dict()).items() if flatten(default.to_dict())[key] != value}
    assert different <= schedule_keys
    if shift == default.dataset.synthetic.shift:  # the default run uses its domain's schedule
        assert different == {"out_dir"}


def test_loaded_config_has_attribute_access():
    cfg = load_config(overrides=["opt.learning_rate=5e-5"])
    assert cfg.opt.learning_rate == cfg["opt"]["learning_rate"] == 5e-5
    assert cfg.dataset.synthetic.image_size == base_config["dataset"]["synthetic"]["image_size"]


def test_load_config_does_not_mutate_base_config():
    before = copy.deepcopy(base_config)
    load_config(overrides=["opt.learning_rate=5e-5", "dataset.synthetic.num_train=3", "opt.decay_steps=[1]"],
                user_config={"augment": {"flip": False}})
    assert base_config == before


@pytest.mark.parametrize(
    ("override", "key", "value", "kind"),
    [
        ("opt.learning_rate=5e-5", "opt.learning_rate", 5e-5, float),
        ("opt.learning_rate=1", "opt.learning_rate", 1.0, float),  # an int is accepted for a float key
        ("teacher.ema_rate=0", "teacher.ema_rate", 0.0, float),
        ("prompt=point", "prompt", "point", str),
        ("teacher.mode=ema", "teacher.mode", "ema", str),
        ("out_dir=runs/a=b", "out_dir", "runs/a=b", str),  # only the first '=' separates key and value
        ("model.checkpoint=", "model.checkpoint", "", str),
        ("augment.flip=false", "augment.flip", False, bool),
        ("augment.flip=False", "augment.flip", False, bool),
        ("augment.strong=TRUE", "augment.strong", True, bool),
        ("opt.decay_steps=[1,2]", "opt.decay_steps", [1, 2], list),
        ("opt.decay_steps=(3, 4)", "opt.decay_steps", [3, 4], list),
        ("opt.decay_steps=[]", "opt.decay_steps", [], list),
        ("num_steps=7", "num_steps", 7, int),
        ("dataset.synthetic.num_train=6", "dataset.synthetic.num_train", 6, int),
    ],
)
def test_override_types(override, key, value, kind):
    cfg = load_config(overrides=[override])
    node = cfg
    for part in key.split("."):
        node = node[part]
    assert node == value
    assert isinstance(node, kind)
    if kind is float or kind is int:
        assert type(node) is kind  # 1 -> 1.0 for floats, and no bool slipping into an int key


def test_parse_override_returns_key_and_literal():
    assert parse_override("opt.learning_rate=5e-5") == ("opt.learning_rate", 5e-5)
    assert parse_override("augment.flip= False ") == ("augment.flip", False)


def test_later_overrides_win():
    cfg = load_config(overrides=["prompt=point", "prompt=coarse"])
    assert cfg.prompt == "coarse"


def test_override_without_equals_raises():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(overrides=["prompt"])


def test_typo_key_raises_with_suggestion():
    with pytest.raises(ConfigError) as info:
        load_config(overrides=["opt.learnig_rate=1e-4"])
    message = str(info.value)
    assert "'opt.learnig_rate'" in message
    assert "Did you mean 'opt.learning_rate'?" in message
    assert "command line" in message


def test_unknown_key_far_from_any_raises_with_pointer_to_base_config():
    with pytest.raises(ConfigError, match="'zzzzzz'.*base_config"):
        load_config(overrides=["zzzzzz=1"])


def test_typo_key_in_config_file_names_the_file(tmp_path):
    path = write_python_config(tmp_path / "typo.py", "config = {'opt': {'learnig_rate': 1e-4}}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "'opt.learnig_rate'" in message and "'opt.learning_rate'" in message
    assert str(path) in message


@pytest.mark.parametrize(
    ("override", "key", "expected_type"),
    [
        ("num_steps=abc", "num_steps", "int"),
        ("num_steps=2.5", "num_steps", "int"),
        ("num_steps=true", "num_steps", "int"),  # a bool is not an int here
        ("opt.learning_rate=fast", "opt.learning_rate", "float"),
        ("opt.learning_rate=True", "opt.learning_rate", "float"),
        ("augment.flip=1", "augment.flip", "bool"),
        ("opt.decay_steps=5", "opt.decay_steps", "list"),
    ],
)
def test_wrong_type_raises_naming_key_and_type(override, key, expected_type):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    message = str(info.value)
    assert f"'{key}'" in message
    assert f"must be of type {expected_type}" in message


def registry_choices(key: str) -> list[str]:
    from datasets import DATASETS
    return sorted(DATASETS)


@pytest.mark.parametrize(
    ("override", "key"),
    [("prompt=polygon", "prompt"), ("dataset.name=foo", "dataset.name"),
     ("teacher.mode=x", "teacher.mode"), ("precision=fp64", "precision"), ("accelerator=tpu", "accelerator")],
)
def test_unknown_choice_raises_listing_allowed_values(override, key):
    allowed = CHOICES[key] if key in CHOICES else registry_choices(key)
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    message = str(info.value)
    assert f"'{key}'" in message
    assert "allowed values" in message
    for value in allowed:
        assert value in message


def test_registry_choices_include_the_documented_names():
    assert "synthetic" in registry_choices("dataset.name")


def test_close_choice_is_suggested():
    with pytest.raises(ConfigError, match="Did you mean 'point'"):
        load_config(overrides=["prompt=points"])


@pytest.mark.parametrize("override", ["opt=1", "dataset.synthetic=3", "loss=none"])
def test_setting_a_section_to_a_value_raises(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=f"'{key}'.*is a section"):
        load_config(overrides=[override])


def test_nested_dict_in_config_file_is_merged_key_by_key(tmp_path):
    path = write_python_config(
        tmp_path / "nested.py",
        "config = {'opt': {'decay_factor': 3}, 'dataset': {'synthetic': {'num_train': 5}}, 'prompt': 'point'}\n",
    )
    cfg = load_config(path)
    assert cfg.opt.decay_factor == 3.0 and isinstance(cfg.opt.decay_factor, float)
    assert cfg.dataset.synthetic.num_train == 5
    assert cfg.prompt == "point"
    # the sibling keys keep their defaults
    for key, default in base_config["opt"].items():
        if key != "decay_factor":
            assert cfg.opt[key] == default
    assert cfg.dataset.synthetic.shift == base_config["dataset"]["synthetic"]["shift"]
    assert cfg.dataset.name == base_config["dataset"]["name"]
    expected = merged(base_config, {"opt": {"decay_factor": 3.0}, "dataset": {"synthetic": {"num_train": 5}},
                                    "prompt": "point"})
    assert cfg.to_dict() == expected


def test_python_config_file_then_overrides(tmp_path):
    path = write_python_config(tmp_path / "my_cfg.py", "config = {'prompt': 'point', 'num_steps': 12}\n")
    cfg = load_config(path, overrides=["prompt=coarse"])
    assert cfg.prompt == "coarse"  # the command line wins over the file
    assert cfg.num_steps == 12
    assert cfg.out_dir == base_config["out_dir"]  # configs/config.py is not read when a file is given


def test_python_config_file_may_use_dotted_keys(tmp_path):
    path = write_python_config(tmp_path / "dotted.py", "config = {'opt.learning_rate': 2e-4}\n")
    assert load_config(str(path)).opt.learning_rate == 2e-4


def test_json_config_file_round_trips_a_saved_config(tmp_path):
    saved = load_config(overrides=["prompt=point", "opt.decay_steps=[5, 9]", "augment.flip=false",
                                   "teacher.mode=ema"])
    path = tmp_path / "config.json"
    path.write_text(json.dumps(saved.to_dict()))
    cfg = load_config(path)
    assert cfg.to_dict() == saved.to_dict()
    assert cfg.opt.decay_steps == [5, 9] and cfg.augment.flip is False and cfg.teacher.mode == "ema"


def test_partial_json_config_file(tmp_path):
    path = tmp_path / "partial.json"
    path.write_text(json.dumps({"lora": {"rank": 8}, "num_steps": 3}))
    cfg = load_config(path)
    assert cfg.lora.rank == 8 and cfg.num_steps == 3
    assert cfg.teacher.to_dict() == base_config["teacher"]


def test_missing_config_file_raises_naming_the_path(tmp_path):
    path = tmp_path / "does_not_exist.py"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "does not exist" in str(info.value)


def test_config_file_without_config_dict_raises(tmp_path):
    path = write_python_config(tmp_path / "empty.py", "settings = {'prompt': 'point'}\n")
    with pytest.raises(ConfigError, match="`config`") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_config_file_whose_config_is_not_a_dict_raises(tmp_path):
    path = write_python_config(tmp_path / "listy.py", "config = [('prompt', 'point')]\n")
    with pytest.raises(ConfigError, match="`config`"):
        load_config(path)


def test_16_mixed_precision_on_cpu_raises():
    with pytest.raises(ConfigError, match="'precision'.*16-mixed"):
        load_config(overrides=["precision=16-mixed", "accelerator=cpu"])


def test_string_keys_take_command_line_text_as_it_is():
    assert load_config(overrides=["out_dir=2024"]).out_dir == "2024"
    with pytest.raises(ConfigError, match="allowed values: box, point, coarse"):
        load_config(overrides=["prompt=3"])  # the text '3', refused as a choice rather than as a type
    with pytest.raises(ConfigError, match="'prompt'.*must be of type str"):
        load_config(user_config={"prompt": 3})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_16_mixed_precision_without_cuda_raises():
    with pytest.raises(ConfigError, match="needs CUDA"):
        load_config(overrides=["precision=16-mixed", "accelerator=auto"])


def test_compile_with_memory_saving_raises():
    with pytest.raises(ConfigError, match="'model.compile' and 'memory_saving' cannot be combined"):
        load_config(overrides=["model.compile=inductor", "memory_saving=true"])
    assert load_config(overrides=["model.compile=inductor"]).model.compile == "inductor"


@pytest.mark.parametrize("overrides", [["precision=32-true", "accelerator=auto"],
                                       ["precision=bf16-mixed", "accelerator=cpu"]])
def test_other_precision_combinations_are_accepted(overrides):
    cfg = load_config(overrides=overrides)
    assert (cfg.precision, cfg.accelerator) == tuple(o.split("=")[1] for o in overrides)


def numeric_keys() -> dict[str, object]:
    """The keys of base_config whose value is a number or a list of numbers, with their defaults."""
    def numeric(value: object) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    return {key: value for key, value in flatten(base_config).items()
            if numeric(value) or (isinstance(value, list) and value and all(numeric(v) for v in value))}


def bounds(interval: str) -> tuple[str, float, float, str]:
    opening, low, high, closing = INTERVAL.fullmatch(interval).groups()
    return opening, float(low), float(high), closing


def test_every_numeric_key_has_a_range_that_holds_its_default():
    assert set(RANGES) == set(numeric_keys()), "RANGES covers exactly the numeric keys of base_config"
    for key, default in numeric_keys().items():
        opening, low, high, closing = bounds(RANGES[key])  # a well-formed interval
        assert low < high, key
        for value in default if isinstance(default, list) else [default]:
            check_range(key, value, RANGES[key])


def outside(key: str) -> list[object]:
    """Values just outside the range of `key`: below or at its lower bound, above or at its upper bound."""
    opening, low, high, closing = bounds(RANGES[key])
    step = 1 if isinstance(numeric_keys()[key], (int, list)) else 0.5
    values = []
    if math.isfinite(low):
        values.append(low - step if opening == "[" else low)
    if math.isfinite(high):
        values.append(high + step if closing == "]" else high)
    return [int(v) if step == 1 else v for v in values]


@pytest.mark.parametrize("key", sorted(RANGES))
def test_each_bound_of_each_range_is_enforced(key):
    """The value just past each finite bound (the bound itself where it is open) is refused, naming the key."""
    for value in outside(key):
        given = [100, value] if isinstance(numeric_keys()[key], list) else value
        with pytest.raises(ConfigError, match=f"Config key '{re.escape(key)}' (is|holds) "):
            load_config(user_config={key: given})


@pytest.mark.parametrize("override, expected", [
    ("seed=-1", "'seed' is -1; it must be in [0, 2147483647]"),
    ("seed=2147483648", "'seed' is 2147483648; it must be in [0, 2147483647]"),
    ("num_steps=0", "'num_steps' is 0; it must be 1 or more"),
    ("num_workers=-1", "'num_workers' is -1; it must be 0 or more"),
    ("loss.temperature=0", "'loss.temperature' is 0; it must be more than 0"),
    ("loss.dice_smooth=0.0", "'loss.dice_smooth' is 0; it must be more than 0"),
    ("opt.learning_rate=0", "'opt.learning_rate' is 0; it must be in (0, 1]"),
    ("opt.learning_rate=1.5", "'opt.learning_rate' is 1.5; it must be in (0, 1]"),
    ("teacher.ema_rate=1.0", "'teacher.ema_rate' is 1; it must be in [0, 1)"),
    ("teacher.ema_rate=-0.1", "'teacher.ema_rate' is -0.1; it must be in [0, 1)"),
    ("auto.pred_iou_thresh=1.01", "'auto.pred_iou_thresh' is 1.01; it must be in [0, 1]"),
    ("dataset.synthetic.image_size=16", "'dataset.synthetic.image_size' is 16; it must be 32 or more"),
    ("opt.decay_steps=[100,-5]", "'opt.decay_steps' holds -5; each of its numbers must be 0 or more"),
    ("opt.decay_steps=[100,'x']", "'opt.decay_steps' holds 'x'; each of its numbers must be 0 or more"),
])
def test_value_outside_its_range_raises_naming_the_key_and_the_range(override, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_config(overrides=[override])


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("key", ["metric.threshold", "loss.iou_threshold", "opt.weight_decay", "loss.focal"])
def test_non_finite_numbers_are_refused_even_where_the_range_is_unbounded(tmp_path, key, value):
    """JSON configs (a run's config.json) and Python files can hold NaN and infinities."""
    config = tmp_path / "config.json"
    section, name = key.split(".")
    config.write_text(json.dumps({section: {name: value}}))
    with pytest.raises(ConfigError, match=f"Config key '{re.escape(key)}' is {value:g}; it must be"):
        load_config(config)


@pytest.mark.parametrize("override", ["seed=0", "seed=2147483647", "teacher.ema_rate=0", "auto.pred_iou_thresh=1",
                                      "auto.box_nms_thresh=0", "opt.learning_rate=1", "metric.threshold=-3.5",
                                      "loss.iou_threshold=2", "save_interval=0", "opt.decay_steps=[]"])
def test_values_on_a_closed_bound_or_inside_are_accepted(override):
    key, value = parse_override(override)
    assert flatten(load_config(overrides=[override]))[key] == value


def test_user_config_dict_is_used_instead_of_a_file(tmp_path):
    """Resuming passes the run's saved config as a dict; no file is read."""
    saved = load_config(overrides=["prompt=point", "num_steps=9"]).to_dict()
    cfg = load_config(tmp_path / "never_read.py", overrides=["num_steps=20"], user_config=saved)
    assert cfg.prompt == "point"
    assert cfg.num_steps == 20
    assert cfg.to_dict() == merged(saved, {"num_steps": 20})


def test_user_config_errors_name_their_source():
    with pytest.raises(ConfigError, match="from checkpoint"):
        load_config(user_config={"prompt_type": "box"})
    with pytest.raises(ConfigError, match="from run/config.json"):
        load_config(user_config={"num_steps": "many"}, source="run/config.json")


def test_user_config_is_validated():
    with pytest.raises(ConfigError, match="'teacher.mode'"):
        load_config(user_config={"teacher": {"mode": "mean"}})


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"])
def test_bad_json_config_raises_config_error(tmp_path, text):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=str(path)):
        load_config(path)


def test_warmup_from_zero_starts_at_lr_zero_as_the_authors_code():
    from engine.adapt import learning_rate_factor

    assert [learning_rate_factor(s, 4, [6], 0.1) for s in range(8)] == [0.25, 0.5, 0.75, 1, 1, 1, 0.1, 0.1]
    assert [learning_rate_factor(s, 4, [6], 0.1, from_zero=True) for s in range(5)] == [0, 0.25, 0.5, 0.75, 1]


@pytest.mark.parametrize("tf32", [True, False])
def test_tf32_follows_the_config(tf32):
    """A run sets TF32 where it starts (adapt, validate, predict), not in a model builder."""
    from engine.run import set_process_options
    from models import build_wesam

    before = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = not tf32
        build_wesam(load_config(overrides=["model.type=vit_tiny", "model.checkpoint=", f"tf32={tf32}"]))
        assert torch.backends.cuda.matmul.allow_tf32 is (not tf32)
        set_process_options(load_config(overrides=[f"tf32={tf32}"]))
        assert torch.backends.cuda.matmul.allow_tf32 is tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def test_the_config_names_the_registries_entries_exactly():
    """CHOICES lists the registries' names so that utils/config.py checks a config without importing
    the layers above it: a dataset or shift added to a registry must be added there too. (Model types
    and LoRA targets are checked by the model registry itself: tests/test_backbone_registry.py.)"""
    from datasets import DATASETS
    from datasets.shifts import SHIFTS

    assert "model.type" not in CHOICES and "lora.targets" not in CHOICES
    assert sorted(CHOICES["dataset.name"]) == sorted(DATASETS)
    assert CHOICES["dataset.synthetic.shift"] == list(SHIFTS)
