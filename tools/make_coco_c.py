"""Make COCO-C: the COCO val2017 images under the paper's 15 corruptions, written once, offline.

    python tools/make_coco_c.py --root COCO_ROOT [--corruptions a,b] [--severity 5] [--workers N]

Reads COCO_ROOT/val2017/*.jpg (or --images DIR) and writes COCO_ROOT/corruption/<type>/<file name>
as JPEG (quality 95); a severity other than the paper's 5 writes to corruption/<type>_s<N>/.

Resumable: an output that exists is skipped, and every output is written to a temporary name in its
folder and then renamed, so an interrupted run never leaves a half-written image under a final name.
Each (image, corruption, severity) has its own seed, so a resumed run writes the same bytes as an
uninterrupted one. Images are decoded as stored (an EXIF orientation tag is not applied) and the
outputs carry no EXIF, so every reader sees an output on the pixel grid of its source file. An
unreadable source image is reported and skipped (so is one with a side under 32 pixels); the
summary counts it and the exit status is then 1.

Speed: about 1.1 s per 640 x 480 image for all 15 corruptions on one CPU core (zoom_blur and
brightness take most of it), so COCO val2017 takes about 1.5 h, less with --workers.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from datasets.corruptions import CORRUPTIONS, MIN_SIDE, corrupt  # noqa: E402
from utils.files import OutputPathError, check_output, make_folder, path_argument, same_path, writing  # noqa: E402

JPEG_QUALITY = 95
IMAGE_SUFFIXES = (".jpg", ".jpeg")
EXPECTED_LAYOUT = """expected layout:
  COCO_ROOT/
    val2017/000000000139.jpg ... (5,000 images)
    annotations/instances_val2017.json
see PREPARE.md for where to get COCO 2017 and how to lay it out"""


@dataclass(frozen=True)
class Job:
    """One source image and the corrupted copies of it still to write."""

    source: Path
    targets: tuple[tuple[str, Path], ...]  # (corruption, output path)
    severity: int
    seed: int


def pair_seed(seed: int, file_name: str, corruption: str, severity: int) -> int:
    """A 32-bit seed for one output, stable across runs, machines and worker counts."""
    digest = hashlib.sha256(f"{seed}/{file_name}/{corruption}/{severity}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def output_dir(root: Path, corruption: str, severity: int) -> Path:
    """root/corruption/<type> for the paper's severity 5, root/corruption/<type>_s<N> otherwise."""
    return root / "corruption" / (corruption if severity == 5 else f"{corruption}_s{severity}")


def write_jpeg(image: np.ndarray, path: Path) -> None:
    """Write `image` (H x W x 3 uint8 RGB) to `path` atomically: a temporary file, then a rename."""
    temporary = path.with_name(path.name + ".tmp")
    with writing(path):
        Image.fromarray(image).save(temporary, format="JPEG", quality=JPEG_QUALITY)
        os.replace(temporary, path)


def run_job(job: Job) -> tuple[Job, str | None]:
    """Write the job's outputs; returns the job and None, or why the source cannot be used."""
    try:
        with Image.open(job.source) as opened:
            image = np.asarray(opened.convert("RGB"))
    # what Pillow raises for a missing, truncated, corrupt or absurdly large file
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        return job, f"{type(error).__name__}: {error}"
    if min(image.shape[:2]) < MIN_SIDE:
        return job, f"{image.shape[1]} x {image.shape[0]} pixels, below the corruptions' minimum side of {MIN_SIDE}"
    for corruption, path in job.targets:
        seed = pair_seed(job.seed, job.source.name, corruption, job.severity)
        write_jpeg(corrupt(image, corruption, job.severity, seed=seed), path)
    return job, None


def run_jobs(jobs: list[Job], workers: int) -> Iterator[tuple[Job, str | None]]:
    """`run_job` over the jobs, in this process or in a pool of `workers` processes (results unordered)."""
    if workers == 1:
        yield from map(run_job, jobs)
        return
    with multiprocessing.Pool(workers) as pool:
        yield from pool.imap_unordered(run_job, jobs)


def parse_corruptions(text: str) -> list[str]:
    """The comma-separated corruption names, checked against CORRUPTIONS."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in CORRUPTIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown corruption(s) {', '.join(unknown) or '(none given)'}; "
                                         f"valid: {', '.join(CORRUPTIONS)}")
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (sys.argv[1:] when `argv` is None), checked."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=path_argument, required=True,
                        help="COCO root: holds val2017/, receives corruption/")
    parser.add_argument("--images", type=path_argument, help="read the images from this folder instead of "
                                                             "ROOT/val2017 (not one of the output folders)")
    parser.add_argument("--corruptions", type=parse_corruptions, default=list(CORRUPTIONS),
                        help="comma-separated subset of: " + ", ".join(CORRUPTIONS) + " (default: all 15)")
    parser.add_argument("--severity", type=int, choices=range(1, 6), default=5, help="1..5 (default: 5, the paper's)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="base seed of every output's own seed (default: 0)")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    args.root, args.images = Path(args.root), args.images and Path(args.images)
    return args


def list_images(folder: Path, default_folder: bool) -> list[Path]:
    """The JPEG files in `folder`, sorted; exits with a message naming the folder if there are none."""
    layout = f"\n{EXPECTED_LAYOUT}" if default_folder else ""
    if not folder.is_dir():
        raise SystemExit(f"error: image folder {folder} does not exist{layout}")
    images = sorted(path for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())
    if not images:
        raise SystemExit(f"error: no .jpg images in {folder}{layout}")
    return images


def main(argv: list[str] | None = None) -> int:
    """Run the tool; returns the exit status (0, or 1 if a source image could not be used)."""
    args = parse_args(argv)
    images = list_images(args.images or args.root / "val2017", default_folder=args.images is None)
    folders = {name: check_output(output_dir(args.root, name, args.severity), "--root's output folder", "folder",
                                  instead="--root")
               for name in args.corruptions}
    source = args.images or args.root / "val2017"
    if any(same_path(folder, source) for folder in folders.values()):  # corrupted images passed off as originals
        raise OutputPathError(f"--images '{source}' is one of the output folders under '{args.root / 'corruption'}'; "
                              "give the folder of the original images.")
    for folder in folders.values():
        make_folder(folder)

    jobs, existing = [], 0
    for source in images:
        targets = tuple((name, folder / source.name) for name, folder in folders.items())
        pending = tuple((name, path) for name, path in targets if not path.exists())
        existing += len(targets) - len(pending)
        if pending:
            jobs.append(Job(source, pending, args.severity, args.seed))

    written, failed, not_written = 0, 0, 0
    total = len(images) * len(folders)
    with tqdm(total=total, initial=existing, unit="file", desc=f"COCO-C severity {args.severity}") as progress:
        for job, error in run_jobs(jobs, args.workers):
            if error is None:
                written += len(job.targets)
            else:
                failed += 1
                not_written += len(job.targets)
                progress.write(f"warning: skipped image {job.source} ({error})", file=sys.stderr)
            progress.update(len(job.targets))

    print(f"written: {written}, skipped (already there): {existing}, "
          f"failed: {failed} unusable image(s), {not_written} output(s) not written; "
          f"output: {args.root / 'corruption'}")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except OutputPathError as error:
        sys.exit(f"error: {error}")
