"""Checks that stop a run before any work on a mistake a user can make, and the command-line
wrapper that shows an expected mistake as a short message instead of a traceback.

Only the exception types in EXPECTED_ERRORS become messages: any other exception is a bug of
ours and keeps its traceback. The message is the same wherever the mistake is met: in a data
loader worker (torch raises the error again in the main process with the worker's traceback as
its message: error_message takes the original back) or in one process of a distributed run
(every process says the same line: engine/shared_errors.py).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from datasets import UnusableDatasetError
from engine.run import run_of_file
from engine.shared_errors import ErrorWatch, share, shared_message
from engine.signals import RunStopped
from models import CheckpointError, check_model_config
from models.weight_files import resolve_path
from utils.config import DEFAULT_CONFIG_FILE, ConfigError
from utils.files import OutputPathError, check_output
from utils.lock import LOCK_FILE

# OutputPathError includes DiskFullError
EXPECTED_ERRORS = (ConfigError, CheckpointError, FileNotFoundError, UnusableDatasetError, OutputPathError,
                   FloatingPointError)


# torch's message for an error raised in a DataLoader worker (torch/_utils.py ExceptionWrapper)
WORKER_ERROR = re.compile(r"Caught \w+ in DataLoader worker process \d+\.\nOriginal Traceback \(most recent call")


def run_main(main: Callable[[], Any]) -> None:
    """Run a script's main(): an expected mistake exits with 'Error: <message>' (status 1), an
    interrupt with a short line (status 130); anything else keeps its traceback. In a distributed
    run, a process whose collective fails because another stopped on an expected mistake exits
    with that process's line."""
    with ErrorWatch() as watch:
        try:
            main()
            watch.finish()
        except EXPECTED_ERRORS as error:
            watch.claim()
            message = error_message(error)
            share(message)
            sys.exit(f"Error: {message}")
        except RuntimeError:  # the backend's error of a collective that another process left
            watch.claim()
            message = shared_message()
            if message is None:
                raise
            sys.exit(f"Error: {message}")
        except RunStopped as stop:
            watch.finish()
            print(stop, file=sys.stderr)
            sys.exit(stop.exit_code)
        except KeyboardInterrupt:
            print("\nInterrupted.", file=sys.stderr)
            sys.exit(130)


def error_message(error: BaseException) -> str:
    """The message of an error as it was raised, also when it was raised in a DataLoader worker:
    torch raises it again in the main process, of the same type, with the worker's traceback as its
    message, which ends with the original message."""
    text = str(error)
    if not WORKER_ERROR.match(text):
        return text
    kind = type(error)
    for prefix in (f"\n{kind.__module__}.{kind.__qualname__}: ", f"\n{kind.__qualname__}: "):
        if (at := text.rfind(prefix)) >= 0:
            return text[at + len(prefix):].rstrip("\n")
    return text


def check_outputs(outputs: Sequence[tuple[str, str | Path]], inputs: Sequence[tuple[str, str | Path | None]]) -> None:
    """Before any work: OutputPathError when an output path (option, path) is an input's (the same
    file or folder, however written), is another output's, or is a file an adaptation run wrote
    (RunFiles.WRITTEN in its folder). Inputs given as None or '' are not there."""
    read = {}
    for name, given in inputs:
        if given:
            read.setdefault(Path(given).resolve(), (name, given))
    written: dict[Path, str] = {}
    for option, path in outputs:
        resolved = Path(path).resolve()
        if resolved in read:
            name, given = read[resolved]
            raise OutputPathError(f"{option} '{path}' is also {name} '{given}', which the script reads: its output "
                                  f"would replace (or mix with) what it reads. Choose another {option}.")
        if resolved in written:
            raise OutputPathError(f"{option} and {written[resolved]} are the same path '{path}': one would replace "
                                  "the other. Give each its own.")
        written[resolved] = option
        if (run := run_of_file(path)) is not None:
            raise OutputPathError(f"{option} '{path}' is a file of the run in '{run}', which the run wrote and reads "
                                  f"again (--resume): choose another {option} (a new name beside it, for example).")


def config_inputs(cfg: Any, config_file: str | Path | None) -> list[tuple[str, Path | None]]:
    """The files a script that builds SAM from `cfg` reads: the config file and model.checkpoint."""
    checkpoint = resolve_path(cfg.model.checkpoint) if cfg.model.checkpoint else None
    return [("the config file", Path(config_file) if config_file else DEFAULT_CONFIG_FILE),
            ("model.checkpoint", checkpoint)]


def check_foreign_files(folder: str | Path, names: Sequence[str], checkpoint: str, option: str) -> None:
    """Before a run starts to write `names` (paths relative to `folder`): OutputPathError naming those
    already there when no run ever held `folder` (it has neither a .lock nor the run's `checkpoint`):
    they are files of another program or of a person, which the run would replace."""
    folder = Path(folder)
    if not folder.is_dir() or (folder / LOCK_FILE).exists() or (folder / checkpoint).exists():
        return
    found = [name for name in names if (folder / name).exists()]
    if found:
        raise OutputPathError(f"{option} '{folder}' holds {', '.join(found)}, not written by a run of this "
                              "repository (the folder holds no run), and a run would replace them. Choose another "
                              f"{option} (a new or empty folder), or move those files away.")


def check_training_config(cfg: Any) -> None:
    """Checks of a training run that utils/config.py's schema cannot make (value ranges are
    there): the model's (check_model_config), the target of the loss, the accelerator and the output
    folders. Raise before any work."""
    check_model_config(cfg)
    if cfg.prompt_source == "auto" and cfg.loss.target == "ground_truth":
        raise ConfigError("loss.target=ground_truth trains on labels, but prompt_source=auto reads none; use "
                          "loss.target=teacher, or prompt_source=labels.")
    check_accelerator(cfg)
    check_output(cfg.out_dir, "out_dir", "folder")
    check_outputs([("out_dir", cfg.out_dir)], [("dataset.root", cfg.dataset.root if cfg.dataset.name != "synthetic"
                                                 else None)])
    if cfg.prompt_source == "auto" and cfg.auto.cache:
        check_output(cfg.auto.cache, "auto.cache", "folder")


def check_accelerator(cfg: Any) -> None:
    """accelerator=cuda needs a visible CUDA GPU, and as many as `devices`."""
    if cfg.accelerator == "cpu":
        return
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if cfg.accelerator == "cuda" and gpus == 0:
        build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise ConfigError(f"accelerator=cuda but no CUDA GPU is visible (torch {torch.__version__}, {build}). "
                          "Use accelerator=cpu (or auto), or see INSTALL.md for a CUDA install.")
    if gpus and cfg.devices > gpus:
        raise ConfigError(f"devices={cfg.devices} but {gpus} CUDA GPU(s) are visible; set devices={gpus} or less.")


def check_train_split(num_images: int, cfg: Any) -> None:
    """A step takes batch_size x devices x num_nodes distinct images: the training split must have that many."""
    needed = cfg.batch_size * cfg.devices * cfg.num_nodes
    if num_images < needed:
        raise ConfigError(f"The training split of {cfg.dataset.name} has {num_images} image(s), fewer than "
                          f"batch_size x devices x num_nodes = {cfg.batch_size} x {cfg.devices} x {cfg.num_nodes} = "
                          f"{needed}; lower batch_size, devices or num_nodes, or add training images.")


def check_scored(metrics: dict[str, Any], cfg: Any) -> None:
    """An evaluation that scored no image measured nothing: stop instead of reporting 0."""
    if metrics["num_images"] == 0:
        raise UnusableDatasetError(
            f"No image of the {cfg.dataset.eval_split} split of {cfg.dataset.name} was scored: none of them has an "
            "instance (empty masks or annotations, or every instance lost in the resize). Check that split's masks, "
            "or evaluate another split with dataset.eval_split=val|test.")
