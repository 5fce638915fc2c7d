"""The distribution-shift benchmark: every adaptation method on every target domain and prompt type.

    python tools/benchmark_shift.py                       # the embedded default (configs/shift/<domain>.py)
    python tools/benchmark_shift.py --domains defocus_blur --prompts box --seeds 0
    python tools/benchmark_shift.py --config configs/config.py --domains camouflage  # one schedule for all
    python tools/benchmark_shift.py --config configs/paper/coco_c.py \\
        --domain-key dataset.corruption --domains gaussian_noise,fog model.checkpoint=...

--config may name each domain's own file with "{domain}" in the path, as the default does.

For each domain, prompt and seed it runs one adaptation per method (rows of the paper's tables):

    self_training  pseudo-labels only: 20 focal + dice + IoU to the teacher's hard mask
    anchor         + the anchor loss
    wesam          + the contrastive loss: full WeSAM, teacher = the student on the weak view (paper)
    wesam_ema      full WeSAM with an EMA teacher
    supervised     ground-truth masks instead of pseudo-labels on the plain images (no strong view), LoRA
                   only (the paper's "Supervised")
    wesam_auto     full WeSAM with no labels: prompts from the instances the frozen anchor finds in
                   everything mode (prompt_source=auto; the cache is shared by a domain's runs)
    wesam_auto_refresh   the same, the instances found again by the adapted model every 100 steps (ours)

Direct (the unadapted model) is step 0 of the first method's runs. Writes <out>/shift_benchmark.md:
per prompt type, target test mIoU (last step, mean ± std over seeds, change against Direct) and
mean run time per cell, the predicted/true mask-area ratio at the last step, for the no-label rows
the automatic instances' recall of the training split's objects, and <out>/shift_<domain>.png:
mIoU against steps with box prompts. Rows of methods not run now are kept from an existing
shift_benchmark.md, so methods can be added to a table later (`--methods wesam_auto`). Runs are
resumable (see tools/experiments.py): a stopped benchmark continues where it stopped.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from collections import defaultdict
from itertools import product
from pathlib import Path
from typing import Any, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.checks import run_main  # noqa: E402
from tools.experiments import markdown_table, mean_spread, run_cell  # noqa: E402
from utils.config import REPO_ROOT, ConfigError, load_config  # noqa: E402
from utils.files import check_output, make_folder, path_argument, write_text, writing  # noqa: E402

METHODS: dict[str, tuple[str, list[str]]] = {
    "self_training": ("Self-training only", ["loss.anchor=0", "loss.contrastive=0"]),
    "anchor": ("+ anchor loss", ["loss.contrastive=0"]),
    "wesam": ("+ contrastive loss = WeSAM (paper)", []),
    "wesam_ema": ("WeSAM, EMA teacher", ["teacher.mode=ema"]),
    # plain images, as lightning-sam's fine-tuning that the paper's Supervised row follows: on glass_blur the
    # strong view held the bound at +6.9 against +9.1 without it (validation, results/shift_exploration.md)
    "supervised": ("Supervised (GT masks, LoRA, plain images)", ["loss.target=ground_truth", "augment.strong=false"]),
    "wesam_auto": ("WeSAM, no labels (auto prompts)", ["prompt_source=auto"]),
    "wesam_auto_refresh": ("WeSAM, no labels, auto prompts refreshed every 100 steps",
                           ["prompt_source=auto", "auto.refresh_every=100"]),
}
DEFAULT_DOMAINS = ("glass_blur", "defocus_blur", "medical")  # chosen on validation: results/embedded_default.md
PROMPTS = ("box", "point", "coarse")
DEFAULT_CONFIG = str(REPO_ROOT / "configs" / "shift" / "{domain}.py")  # each domain's schedule, chosen on validation


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=path_argument, default=DEFAULT_CONFIG,
                        help=f"base config file; {{domain}} in it is replaced by each domain "
                             f"(default: {DEFAULT_CONFIG})")
    parser.add_argument("--domain-key", default="dataset.synthetic.shift", help="config key that selects a domain")
    parser.add_argument("--domains", default=",".join(DEFAULT_DOMAINS), help="comma-separated values of --domain-key")
    parser.add_argument("--prompts", default=",".join(PROMPTS))
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {', '.join(METHODS)}")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds; each cell is their mean")
    parser.add_argument("--runs", type=path_argument, default="runs/shift_benchmark",
                        help="folder of the individual runs")
    parser.add_argument("--out", type=path_argument, default="results",
                        help="folder for shift_benchmark.md and the plots")
    parser.add_argument("overrides", nargs="*", help="key=value applied to every run (e.g. num_steps=300)")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    for name in ("domains", "prompts", "methods", "seeds"):
        setattr(args, name, [v for v in getattr(args, name).split(",") if v])
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown or not args.methods:
        parser.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    return args


def domain_config(args: argparse.Namespace, domain: str) -> str:
    """The config file of `domain`'s runs."""
    path = args.config.replace("{domain}", domain)
    if path != args.config and not Path(path).is_file():
        raise ConfigError(f"No config for domain '{domain}': {path} does not exist. Write one (see configs/shift/), "
                          "or pass --config configs/config.py to run every domain with one config.")
    return path


def cell_overrides(args: argparse.Namespace, domain: str, prompt: str, method: str, seed: str) -> list[str]:
    overrides = [*args.overrides, f"{args.domain_key}={domain}", f"prompt={prompt}", f"seed={seed}",
                 *METHODS[method][1]]
    if "prompt_source=auto" in overrides:  # the anchor's instances depend on neither the seed nor the prompt type
        overrides.append(f"auto.cache={Path(args.runs) / domain / 'auto_instances'}")
    return overrides


def run_all(args: argparse.Namespace) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """Summaries of every (domain, prompt, method) over the seeds, running what is not done yet."""
    cells = [(d, p, m, s) for d in args.domains for p in args.prompts for m in args.methods for s in args.seeds]
    results: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    started = time.time()
    for number, (domain, prompt, method, seed) in enumerate(cells, 1):
        print(f"[{number}/{len(cells)}] {domain} / {prompt} / {method} / seed {seed} "
              f"({(time.time() - started) / 60:.1f} min so far)", flush=True)
        out_dir = Path(args.runs) / domain / prompt / method / f"seed{seed}"
        results[(domain, prompt, method)].append(
            run_cell(out_dir, cell_overrides(args, domain, prompt, method, seed), domain_config(args, domain)))
    return results


def last_values(runs: list[dict[str, Any]], key: str) -> list[float]:
    return [run["last"][key] for run in runs]


def learning_rate_schedule(cfg: Any) -> str:
    """'lr 0.003 (×0.25 at steps 100, 150)', naming only the decays inside the run."""
    decays = [str(step) for step in cfg.opt.decay_steps if step < cfg.num_steps]
    return (f"lr {cfg.opt.learning_rate:g}"
            + (f" (×{cfg.opt.decay_factor:g} at steps {', '.join(decays)})" if decays else ""))


def cell(runs: list[dict[str, Any]]) -> str:
    """'mIoU ± std (change) · area · PL or recall · seconds' of one method on one domain, over seeds."""
    gain = np.mean(last_values(runs, "miou")) - np.mean([r["direct"]["miou"] for r in runs])
    seconds = np.mean([r["seconds"] for r in runs])
    area = np.mean(last_values(runs, "area_ratio"))
    pseudo = [run["last"].get("pseudo_label_iou") for run in runs]
    extra = f" · PL {np.mean(pseudo):.2f}" if None not in pseudo else ""
    found = [run.get("auto_instances", {}).get("diagnostic") for run in runs]
    if found[0]:  # the same anchor instances in every seed's run
        extra += f" · recall {found[0]['recall']:.2f}, best IoU {found[0]['mean_best_iou']:.2f}"
    return f"{mean_spread(last_values(runs, 'miou'))} ({100 * gain:+.1f}) · area {area:.2f}{extra} · {seconds:.0f} s"


def old_section(old_text: str, prompt: str) -> str:
    """The `prompt` table of an earlier shift_benchmark.md: the text after its heading and blank line."""
    return old_text.partition(f"## Prompt: {prompt}\n\n")[2].partition("## Prompt:")[0]


def kept_rows(old_text: str, prompt: str, labels: set[str]) -> dict[str, str]:
    """{row label: markdown line} of the `prompt` table of an earlier shift_benchmark.md, but those in `labels`."""
    rows = {}
    for line in old_section(old_text, prompt).splitlines()[2:]:  # after the header and rule
        if line.startswith("| "):
            label = line[2:].split(" | ")[0]
            if label not in labels:
                rows[label] = line
    return rows


def report(args: argparse.Namespace, results: dict[tuple[str, str, str], list[dict[str, Any]]],
           old_text: str = "") -> str:
    configs = {domain: load_config(domain_config(args, domain), args.overrides) for domain in args.domains}
    schedules = {domain: learning_rate_schedule(cfg) for domain, cfg in configs.items()}
    if len(set(schedules.values())) == 1:
        schedule = next(iter(schedules.values())) + ","
    else:
        schedule = "; ".join(f"{domain}: {text}" for domain, text in schedules.items()) + ";"
    cfg = configs[args.domains[0]]
    command = shlex.join(["python", "tools/benchmark_shift.py", *args.argv])
    recall_note = ("Recall (no-label rows): of the training split's ground-truth objects, the fraction that an "
                   "automatic instance covers at IoU 0.5 or more, and their mean best IoU (labels read for this "
                   "diagnostic only); their run time includes finding the instances, once per domain (in the first "
                   "seed's run).\n")
    labels = [METHODS[method][0] for method in args.methods]
    kept = {prompt: kept_rows(old_text, prompt, {"Direct", *labels}) for prompt in args.prompts}
    if any(kept.values()):  # rows of an earlier invocation: its description stays, this one's follows
        lines = [old_text.partition("## Prompt:")[0].rstrip("\n") + "\n",
                 f"Rows {', '.join(labels)}: added by `{command}` on {platform.machine()} "
                 f"({time.strftime('%Y-%m-%d')}), the other rows kept from the earlier command."
                 + ("\n" if recall_note in old_text else " " + recall_note)]
    else:
        lines = [
            "# Distribution-shift benchmark\n",
            f"SAM `{cfg.model.type}` (weights `{cfg.model.checkpoint or 'random'}`), dataset `{cfg.dataset.name}`, "
            f"domains by `{args.domain_key}`; {cfg.num_steps} steps, {schedule} batch "
            f"{cfg.batch_size}, LoRA rank {cfg.lora.rank} on {', '.join(cfg.lora.targets)}, EMA rate "
            f"{cfg.teacher.ema_rate:g}, focal alpha "
            f"{'the number of masks' if cfg.loss.num_masks_as_alpha else f'{cfg.loss.focal_alpha:g}'}; seeds "
            f"{', '.join(args.seeds)}; evaluated on the `{cfg.dataset.eval_split}` split. Written by "
            f"`{command}` on {platform.machine()} ({time.strftime('%Y-%m-%d')}).\n",
            "Each cell: mIoU in % at the last step (no model selection), mean ± std over seeds, (change against "
            "Direct in points), and the mean run time of one seed. Area: predicted / true mask area at the last "
            "step (1 = no growth). PL (self-training rows): mIoU of the teacher's pseudo-labels against the ground "
            "truth on the training images, over the last evaluation interval. " + recall_note,
        ]
    order = [label for label, _ in METHODS.values()]
    for prompt in sorted({*args.prompts, *old_prompts(old_text)},
                         key=lambda p: PROMPTS.index(p) if p in PROMPTS else 9):
        if prompt not in args.prompts:  # a table this invocation has no runs for, as it was
            lines.append(f"## Prompt: {prompt}\n\n" + old_section(old_text, prompt).rstrip("\n") + "\n")
            continue
        header = ["Method"] + [f"{domain}" for domain in args.domains]
        rows = [["Direct"] + [mean_spread([r["direct"]["miou"] for r in results[(d, prompt, args.methods[0])]])
                              for d in args.domains]]
        new = {METHODS[method][0]: [METHODS[method][0]] + [cell(results[(domain, prompt, method)])
                                                           for domain in args.domains]
               for method in args.methods}
        for label in sorted({*new, *kept[prompt]}, key=lambda text: order.index(text) if text in order else len(order)):
            rows.append(new[label] if label in new else kept[prompt][label][2:-2].split(" | "))
        lines += [f"## Prompt: {prompt}\n", markdown_table(header, rows)]
    return "\n".join(lines)


def old_prompts(old_text: str) -> list[str]:
    """The prompt types of the tables of an earlier shift_benchmark.md."""
    return [line.removeprefix("## Prompt: ").strip() for line in old_text.splitlines()
            if line.startswith("## Prompt: ")]


def plot(args: argparse.Namespace, results: dict[tuple[str, str, str], list[dict[str, Any]]], out: Path) -> list[Path]:
    """mIoU against steps (mean over seeds) of wesam, wesam_ema, supervised and the no-label methods among those
    run, box prompts, one figure per domain."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prompt = "box" if "box" in args.prompts else args.prompts[0]
    written = []
    for domain in args.domains:
        figure, axes = plt.subplots(figsize=(5, 3.5))
        for method in ("wesam", "wesam_ema", "supervised", "wesam_auto", "wesam_auto_refresh"):
            runs = results.get((domain, prompt, method))
            if not runs:
                continue
            steps = [h["step"] for h in runs[0]["history"]]
            curve = np.mean([[h["miou"] for h in run["history"]] for run in runs], axis=0)
            axes.plot(steps, 100 * curve, marker="o", markersize=3, label=METHODS[method][0])
        axes.set_xlabel("step")
        axes.set_ylabel(f"target {prompt} mIoU (%)")
        axes.set_title(f"{domain}: mean of {len(args.seeds)} seed(s)")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
        figure.tight_layout()
        # rows added to a table later get their own figure, beside that of the wesam runs
        path = out / (f"shift_{domain}.png" if "wesam" in args.methods else f"shift_{domain}_{args.methods[0]}.png")
        with writing(path):
            figure.savefig(path, dpi=120)
        plt.close(figure)
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> str:
    args = parse_args(argv)
    out = check_output(args.out, "--out", "folder")
    check_output(args.runs, "--runs", "folder")
    for domain, prompt, method, seed in product(args.domains, args.prompts, args.methods, args.seeds):
        # a bad key or value, or a missing domain config, fails here, before any run
        load_config(domain_config(args, domain), cell_overrides(args, domain, prompt, method, seed))
    results = run_all(args)
    make_folder(out)
    table = out / "shift_benchmark.md"
    old_text = table.read_text() if table.exists() else ""
    text = report(args, results, old_text)
    write_text(table, text)
    plots = plot(args, results, out)
    print(text)
    print(f"Wrote {out / 'shift_benchmark.md'} and {', '.join(str(p) for p in plots)}")
    return text


if __name__ == "__main__":
    run_main(main)
