"""Masks of new images with an adapted SAM (or the unadapted one without --ckpt).

    python predict.py --ckpt ADAPTER [--config RUN/config.json] --images FILE_OR_DIR
                      (--boxes-json FILE | --coco FILE | --box x1,y1,x2,y2 ... | --points x,y[,x,y...] ...)
                      --out DIR [--format png|rle] [key=value ...]

Prompts, in pixels of the original image:
  --box x1,y1,x2,y2        one object's box, for every image (repeat for more objects)
  --points x,y[,x,y...]    one object's positive points, for every image (repeat for more objects)
  --boxes-json FILE        {"<image file name>": [[x1, y1, x2, y2], ...], ...}
  --coco FILE              a COCO instances json: each annotation's bbox is a prompt
Each is checked before any work, the same way: finite numbers, boxes with x1 < x2 and y1 < y2 that
overlap the image (a box partly outside it is kept: SAM takes coordinates beyond the border),
points inside the image. A value starting with '-' needs '=': --box=-5,0,40,30.
Writes to DIR, for each image: <stem>.png (label map: 0 background, i for the i-th prompt's mask;
a later mask covers an earlier one) or, with --format rle, one masks.json of COCO RLE records
(with --coco: image_id and category_id of each annotation, a COCO results file); and
<stem>_overlay.png (two images of one stem, a.jpg and a.png: named after the whole file name,
a.jpg.png). DIR is not the --images folder, and a file there that predict.py did not write is
never replaced (its PNG files carry the text SOFTWARE). Images are resized, padded and prompted
by the same code as training and validate.py (datasets/instances.py), so masks equal
validate.py's on the same data.
Without --config, the config.json of the run that wrote ADAPTER is used (else configs/config.py).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from pycocotools import mask as mask_utils
from tqdm import tqdm

from datasets.images import file_header, read_image
from datasets.instances import InstanceDataset
from datasets.inventory import IMAGE_EXTENSIONS, Inventory
from datasets.spec import SampleOptions
from engine.checkpoint import load_student_adapter
from engine.checks import check_accelerator, check_outputs, config_inputs, run_main
from engine.predictions import sample_outputs
from engine.run import set_process_options
from models import build_wesam
from models.lora import STUDENT
from models.backbones import evaluation_decoding, input_sizes
from utils.config import ConfigError, config_of, load_config
from utils.files import OutputPathError, check_output, make_folder, path_argument, writing, write_json
from utils.visualize import overlay


def comma_numbers(text: str, source: str) -> list[float]:
    """The numbers of --box or --points text, '1,2.5,3'; ConfigError naming `source` for another text."""
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"{source} is not numbers separated by commas.") from None


def numbers(values: Any, source: str) -> list[float]:
    """The numbers of a prompt (from comma_numbers or a JSON file); ConfigError naming `source` for
    anything but a list of finite numbers (a string, a bool, null, NaN, an infinity)."""
    if not isinstance(values, (list, tuple)) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ConfigError(f"{source} is not a list of numbers: {str(values)[:80]}")
    if not all(math.isfinite(v) for v in values):
        raise ConfigError(f"{source} holds a number that is not finite (NaN or an infinity): {str(values)[:80]}")
    return [float(v) for v in values]


def checked_box(values: Any, source: str, image: Path, size: tuple[int, int] | None,
                xywh: bool = False) -> list[float]:
    """[x1, y1, x2, y2] of a box prompt given as x1,y1,x2,y2 (or COCO's x,y,w,h when `xywh`) in
    pixels of `image` (width x height `size`, None when unknown). ConfigError naming `source` unless
    it is four finite numbers, x1 < x2 and y1 < y2, and the box overlaps the image (a box partly
    outside the image is kept as it is: SAM takes coordinates beyond the border)."""
    box = numbers(values, source)
    layout = "x, y, width, height" if xywh else "x1, y1, x2, y2"
    if len(box) != 4:
        raise ConfigError(f"{source} has {len(box)} number(s); a box is 4: {layout}.")
    if xywh:
        box = [box[0], box[1], box[0] + box[2], box[1] + box[3]]
    x1, y1, x2, y2 = box
    if not (x1 < x2 and y1 < y2):
        rule = "width and height more than 0" if xywh else "x1 < x2 and y1 < y2"
        raise ConfigError(f"{source} is an empty box: {layout} needs {rule}. Give a single point with --points.")
    if size and not (x1 < size[0] and x2 > 0 and y1 < size[1] and y2 > 0):
        raise ConfigError(f"{source} lies outside the image '{image.name}' ({size[0]} x {size[1]} pixels).")
    return box


def checked_points(values: Any, source: str, image: Path,
                   size: tuple[int, int] | None) -> list[tuple[float, float]]:
    """The (x, y) points of a points prompt x1,y1,x2,y2... in pixels of `image` (width x height
    `size`, None when unknown); ConfigError naming `source` unless they are pairs of finite numbers
    inside the image (its border included)."""
    values = numbers(values, source)
    if len(values) % 2:
        raise ConfigError(f"{source} has {len(values)} number(s); points are pairs x,y.")
    points = list(zip(values[::2], values[1::2]))
    outside = [(x, y) for x, y in points if size and not (0 <= x <= size[0] and 0 <= y <= size[1])]
    if outside:
        raise ConfigError(f"{source}: the point {outside[0][0]:g},{outside[0][1]:g} lies outside the image "
                          f"'{image.name}' ({size[0]} x {size[1]} pixels).")
    return points


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=path_argument, help="adapter .safetensors or last.ckpt; without it, the "
                                                            "unadapted SAM")
    parser.add_argument("--config", type=path_argument, help="the run's config.json (default: the one of the "
                                                             "adapter's run, else configs/config.py)")
    parser.add_argument("--images", type=path_argument, required=True, help="an image file or a folder of images")
    prompts = parser.add_mutually_exclusive_group(required=True)
    prompts.add_argument("--box", action="append", help="x1,y1,x2,y2 (repeatable)")
    prompts.add_argument("--points", action="append",
                         help="x,y[,x,y...]: positive points of one object (repeatable)")
    prompts.add_argument("--boxes-json", type=path_argument, help='{"<image file name>": [[x1, y1, x2, y2], ...]}')
    prompts.add_argument("--coco", type=path_argument, help="COCO instances json whose annotation bboxes are the "
                                                            "prompts")
    parser.add_argument("--out", type=path_argument, required=True,
                        help="output folder (new, or of an earlier predict.py: no file of another is replaced)")
    parser.add_argument("--format", choices=("png", "rle"), default="png", help="label-map PNGs or COCO RLE json")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. model.checkpoint=...")
    return parser.parse_args(argv)


def image_files(path: Path) -> list[Path]:
    """The image file `path`, or the image files of folder `path` sorted by name."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"--images '{path}' is neither an image file nor a folder.")
    inventory = Inventory("", "")
    files = inventory.scan(path)
    if inventory.skipped:  # every entry of the folder read or named
        print(f"{len(files)} image(s) of '{path}' are read; not read:", *inventory.skipped_lines(set()), sep="\n")
    if not files:
        raise ConfigError(f"Folder '{path}' has no image file ({', '.join(IMAGE_EXTENSIONS)}).")
    return files


def read_json(path: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"Prompt file '{path}' does not exist.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"Prompt file '{path}' is not valid JSON ({error}).") from None


def image_prompts(args: argparse.Namespace, files: list[Path]) -> list[dict[str, Any]]:
    """Per image: {"path", "boxes": N x 4 XYXY (a point is a box of size 0), "groups": the
    rows of `boxes` of each object when prompted by points, "ids": COCO (image_id, category_id)}.
    Every prompt, however given, is checked by checked_box or checked_points before any work."""
    if args.box or args.points:
        records = []
        for path in files:
            size = file_header(path)[1]  # as read_image reads it: the pixels as stored
            if args.box:
                boxes = [checked_box(comma_numbers(text, f"--box '{text}'"), f"--box '{text}'", path, size)
                         for text in args.box]
                groups = None
            else:
                objects = [checked_points(comma_numbers(text, f"--points '{text}'"), f"--points '{text}'", path, size)
                           for text in args.points]
                boxes = [[x, y, x, y] for points in objects for x, y in points]
                groups = np.split(np.arange(len(boxes)), np.cumsum([len(points) for points in objects])[:-1])
            records.append({"path": path, "boxes": np.array(boxes, np.float32), "groups": groups, "ids": None})
        return records
    by_name = {f.name: f for f in files}
    if args.boxes_json:
        table = read_json(args.boxes_json)
        if not isinstance(table, dict) or not all(isinstance(boxes, list) for boxes in table.values()):
            raise ConfigError(f"--boxes-json '{args.boxes_json}' must map image file names to lists of "
                              "[x1, y1, x2, y2] boxes.")
        entries = {name: ([(box, f"The boxes of '{name}' in --boxes-json '{args.boxes_json}': box {i}")
                           for i, box in enumerate(boxes)], None) for name, boxes in table.items()}
    else:
        coco = read_json(args.coco)
        try:
            names = {image["id"]: Path(image["file_name"]).name for image in coco["images"]}
            entries: dict[str, tuple[list, list | None]] = {name: ([], []) for name in names.values()}
            for annotation in coco["annotations"]:
                name = names[annotation["image_id"]]
                source = f"The boxes of '{name}' in --coco '{args.coco}': the bbox of annotation {annotation.get('id')}"
                entries[name][0].append((annotation["bbox"], source))
                entries[name][1].append((annotation["image_id"], annotation.get("category_id", 1)))
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigError(f"--coco '{args.coco}' is not a COCO instances json (images, annotations with "
                              f"bbox; {type(error).__name__}: {error}).") from None
    unknown = sorted(name for name, (boxes, _) in entries.items() if len(boxes) and name not in by_name)
    if unknown and len(unknown) == sum(len(boxes) > 0 for boxes, _ in entries.values()):
        raise ConfigError(f"{len(unknown)} image(s) of the prompt file are not in --images "
                          f"(e.g. '{unknown[0]}'), none is; prompt files name images by file name.")
    if unknown:
        print(f"Warning: {len(unknown)} image(s) of the prompt file are not in --images (e.g. '{unknown[0]}'); "
              "predicting the others.", file=sys.stderr)
    records = []
    for name, (boxes, ids) in entries.items():
        if name not in by_name or not boxes:
            continue
        size = file_header(by_name[name])[1]
        boxes = [checked_box(box, source, by_name[name], size, xywh=args.coco is not None) for box, source in boxes]
        records.append({"path": by_name[name], "boxes": np.array(boxes, np.float32), "groups": None, "ids": ids})
    return sorted(records, key=lambda r: r["path"])


class PromptedImages(InstanceDataset):
    """Images with prompt boxes, made into samples by InstanceDataset.make_sample as evaluation
    images are: the same resize, padding and box transform."""

    def __init__(self, records: list[dict[str, Any]], options: SampleOptions) -> None:
        super().__init__(replace(options, prompt="box"), train=False)
        self.records = records

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The image, and as its masks each box filled (what make_sample needs to keep an
        instance through the resize: at least one input pixel per resized pixel), and the boxes."""
        image = read_image(self.records[index]["path"])
        boxes = self.records[index]["boxes"]
        height, width = image.shape[:2]
        margin = math.ceil(max(height, width) / self.options.image_size)  # input pixels per resized pixel
        masks = np.zeros((len(boxes), height, width), bool)
        for mask, (x1, y1, x2, y2) in zip(masks, boxes):
            x1, y1 = min(max(int(x1), 0), width - margin), min(max(int(y1), 0), height - margin)
            mask[y1:max(int(math.ceil(y2)), y1 + margin), x1:max(int(math.ceil(x2)), x1 + margin)] = True
        return image, masks, boxes


def prompt_sets(sample: dict[str, Any],
                groups: list[np.ndarray] | None) -> tuple[list[dict[str, torch.Tensor]], list[int]]:
    """The sample's box prompts; or with `groups` its zero-size boxes as the positive points of
    each object, one prompt set (K x 2 points per object) per number of points K. Also the order
    of the objects in the sets' concatenation."""
    boxes = sample["prompts"]["boxes"]
    if groups is None:
        return [{"boxes": boxes}], list(range(len(boxes)))
    sets, order = [], []
    for count in sorted({len(g) for g in groups}):
        objects = [i for i, g in enumerate(groups) if len(g) == count]
        points = torch.stack([boxes[torch.as_tensor(groups[i]), :2] for i in objects])
        sets.append({"points": points, "point_labels": torch.ones(points.shape[:2], dtype=torch.int64)})
        order += objects
    return sets, order


def label_map(masks: np.ndarray) -> np.ndarray:
    """N x H x W bool -> H x W label map (i + 1 where mask i is, later masks on top)."""
    labels = np.zeros(masks.shape[1:], np.uint8 if len(masks) < 256 else np.uint16)
    for i, mask in enumerate(masks):
        labels[mask] = i + 1
    return labels


# The text chunk of every PNG file predict.py writes: how a later run tells its own files from a person's
SOFTWARE = ("Software", "wesam predict.py")


def save_png(pixels: np.ndarray, path: Path) -> None:
    """Write H x W (x 3) pixels as a PNG file marked as predict.py's (SOFTWARE); a failed write ends
    in a message (OutputPathError)."""
    info = PngInfo()
    info.add_text(*SOFTWARE)
    with writing(path):
        Image.fromarray(pixels).save(path, pnginfo=info)


def written_by_predict(path: Path) -> bool:
    """Whether the existing file `path` is an output of predict.py: a PNG file marked SOFTWARE, or a
    masks.json of its records."""
    try:
        if path.suffix == ".png":
            with Image.open(path) as image:
                return getattr(image, "text", {}).get(SOFTWARE[0]) == SOFTWARE[1]
        records = json.loads(path.read_text())
        return isinstance(records, list) and all(isinstance(r, dict) and {"file_name", "instance"} <= set(r)
                                                 for r in records)
    except (OSError, ValueError, SyntaxError):  # unreadable, not an image, not JSON: not ours
        return False


def output_stems(files: list[Path]) -> dict[Path, str]:
    """The stem of each image's outputs (<stem>.png, <stem>_overlay.png): its file name's stem, or
    its whole file name where two images would share an output (a.jpg and a.png: a.jpg.png and
    a.png.png). ConfigError naming both when even those coincide."""
    stems = {path: path.stem for path in files}
    for attempt in range(2):
        owners: dict[str, list[Path]] = {}
        for path, stem in stems.items():
            for name in (f"{stem}.png", f"{stem}_overlay.png"):
                owners.setdefault(name, []).append(path)
        shared = {name: paths for name, paths in owners.items() if len(paths) > 1}
        if not shared:
            break
        if attempt:
            name, (first, second, *_) = next(iter(shared.items()))
            raise ConfigError(f"--images '{first.name}' and '{second.name}' would both write '{name}'; rename one "
                              "of them.")
        for path in {path for paths in shared.values() for path in paths}:
            stems[path] = path.name
    return stems


def check_outputs_of(out: Path, args: argparse.Namespace, files: list[Path], records: list[dict[str, Any]],
                     config: str | Path | None, cfg: Any) -> None:
    """Before any work: no output is an input (the --images folder, an image, a prompt file, the
    adapter, the config, the SAM weights) and none replaces a file that predict.py did not write."""
    ends = ["_overlay.png"] + ([".png"] if args.format == "png" else [])
    written = [out / f"{record['stem']}{end}" for record in records for end in ends]
    written += [out / "masks.json"] if args.format == "rle" else []
    inputs = [("--images", args.images), ("--ckpt", args.ckpt), ("--boxes-json", args.boxes_json),
              ("--coco", args.coco), *config_inputs(cfg, config)]
    check_outputs([("--out", out)] + [("--out", path) for path in written],
                  inputs + [("an image of --images", path) for path in files])
    for path in written:
        if path.exists() and not written_by_predict(path):
            raise OutputPathError(f"--out: '{path}' is there already and predict.py did not write it (a file of yours "
                                  "or of another program); choose another --out (a new or empty folder), or move it "
                                  "away.")


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    out = check_output(args.out, "--out", "folder")
    config = config_of(args.config, args.ckpt)
    cfg = load_config(config, args.overrides)
    check_accelerator(cfg)
    set_process_options(cfg)
    files = image_files(Path(args.images))
    records = image_prompts(args, files)
    stems = output_stems([record["path"] for record in records])
    for record in records:
        record["stem"] = stems[record["path"]]
    check_outputs_of(out, args, files, records, config, cfg)
    renamed = sorted(record["path"].name for record in records if record["stem"] != record["path"].stem)
    if renamed:
        print(f"Warning: images whose masks would share a file name ({', '.join(renamed[:4])}"
              f"{', ...' if len(renamed) > 4 else ''}): their masks are named after the whole file name "
              f"({renamed[0]}.png, {renamed[0]}_overlay.png).", file=sys.stderr)
    model = build_wesam(cfg)
    if args.ckpt:
        load_student_adapter(model.sam, args.ckpt, cfg.model.type, cfg.lora.rank, cfg.lora.targets)
    device = torch.device("cuda" if cfg.accelerator != "cpu" and torch.cuda.is_available() else "cpu")
    model = model.to(device).eval()
    dataset = PromptedImages(records, SampleOptions.from_config(cfg, **input_sizes(cfg.model.type)))
    decoding = evaluation_decoding(cfg.model.type, cfg.model.decoding)  # as validate.py's
    make_folder(out)
    results: list[dict[str, Any]] = []
    for index in tqdm(range(len(dataset)), desc="predict", dynamic_ncols=True):
        record = records[index]
        sample = dataset[index]
        if sample["skipped"]:  # unreadable: the dataset's warning names the file
            continue
        sets, order = prompt_sets(sample, record["groups"])
        image = read_image(record["path"])
        logits, scores = sample_outputs(model, sample, STUDENT if args.ckpt else None, sets,
                                        original_size=image.shape[:2], decoding=decoding)
        logits[order], scores[order] = logits.clone(), scores.clone()  # back to the order of the prompts
        masks = (logits > cfg.metric.threshold).cpu().numpy()  # the evaluation's threshold (metric.threshold)
        save_png(overlay(image, masks), out / f"{record['stem']}_overlay.png")
        if args.format == "png":
            save_png(label_map(masks), out / f"{record['stem']}.png")
        for i, (mask, score) in enumerate(zip(masks, scores.tolist())):
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            entry = {"file_name": record["path"].name, "instance": i, "score": score,
                     "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}}
            if record["ids"]:
                entry.update(image_id=record["ids"][i][0], category_id=record["ids"][i][1])
            results.append(entry)
    if args.format == "rle":
        write_json(out / "masks.json", results)
    print(f"Masks of {len({r['file_name'] for r in results})} image(s) written to {out}, aligned with the images' "
          "stored pixels (EXIF orientation tags are not applied, as COCO does)")
    return results


if __name__ == "__main__":
    run_main(main)
