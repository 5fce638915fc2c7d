"""What became of every file of the folders a dataset split is read from: used by this split, by
another split, or skipped with its reason. A loader fills an Inventory while it lists its folders
and pairs its files; `files_report` gives the lines a script prints when it builds the splits:

    Dataset 'folder', test split: 9 files found in '<root>/images', '<root>/masks'; 2 images used,
    4 in the other splits; 3 skipped (in a sub-folder: 1, format not read: 1, mask without an image: 1).
      skipped '<root>/images/old': a sub-folder (2 files), not read
      skipped '<root>/images/notes.txt': a format not read (read: .jpg, .jpeg, .png, ...)
      skipped '<root>/masks/x.png': a mask without an image (no image named 'x')

Each skipped file is named once over the lines of one report (the splits of a run share their
folders), at most MAX_NAMED per reason.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")
MAX_NAMED = 20  # skipped files named per reason in one report; the rest are counted

# the reasons of the skips that every loader shares (loaders add their own, e.g. "not in <a json>")
SUB_FOLDER = "in a sub-folder"
OTHER_FORMAT = "format not read"
NO_MASK = "image without a mask"
NO_IMAGE = "mask without an image"
NO_INSTANCE = "mask without an instance"


class Inventory:
    """The files of the folders one split of `dataset` is read from (see the module docstring)."""

    def __init__(self, dataset: str, split: str) -> None:
        self.dataset = dataset
        self.split = split
        self.folders: list[Path] = []
        self.found = 0  # entries of the folders (files and sub-folders)
        self.used = 0  # images of this split (FileDataset sets it)
        self.elsewhere = 0  # images of the other splits
        self.skipped: dict[str, list[tuple[Path, str]]] = {}  # reason -> [(path, detail)]
        self.notes: list[str] = []  # what is left out by the dataset's design: counted, not named

    def scan(self, folder: Path, extensions: Sequence[str] = IMAGE_EXTENSIONS, sub_folders: bool = False,
             recursive: bool = False) -> list[Path]:
        """The entries of `folder` that a loader may read, sorted: its files with one of `extensions`
        (any case), and with `sub_folders` its folders too; every other entry is counted and skipped.
        `recursive` reads the files of sub-folders as well (COCO file names may hold a folder)."""
        self.folders.append(folder)
        readable = []
        for path in sorted(folder.rglob("*") if recursive else folder.iterdir()):
            if recursive and path.is_dir():
                continue
            self.found += 1
            if path.is_dir() and not sub_folders:
                files = sum(1 for p in path.rglob("*") if p.is_file())
                self.skip(path, SUB_FOLDER, f"a sub-folder ({files} file{'s' * (files != 1)}), not read")
            elif not path.is_dir() and path.suffix.lower() not in extensions:
                self.skip(path, OTHER_FORMAT, f"a format not read (read: {', '.join(extensions)})")
            else:
                readable.append(path)
        return readable

    def scan_listed(self, folder: Path, listed: set[Path], source: Path, recursive: bool = False,
                    whole: bool = True) -> None:
        """Scan `folder`; its files that `source` (a json or CSV naming the dataset's files: their
        paths `listed`) does not list are not read: skipped by name when `source` lists the `whole`
        dataset, else counted (a split's own list: they may be another split's)."""
        unlisted = [path for path in self.scan(folder, recursive=recursive) if path not in listed]
        if whole:
            for path in unlisted:
                self.skip(path, f"not in {source.name}", f"not listed in '{source}', not read")
        elif unlisted:
            self.note(f"{len(unlisted)} files of '{folder}' are not in '{source.name}' (other splits' images, or not "
                      "used), not read here")

    def skip(self, path: Path, reason: str, detail: str = "") -> None:
        """`path` is not used, for `reason` (shared by files skipped alike; `detail` adds what is
        particular to this one)."""
        self.skipped.setdefault(reason, []).append((path, detail))

    def note(self, text: str) -> None:
        """Something the dataset leaves out by design (e.g. VOC images without an instance mask):
        said with its count in the line, not named."""
        self.notes.append(text)

    def assign(self, records: Sequence, split_records: Sequence) -> None:
        """The split takes `split_records` of all the `records` the folders give; the rest are the
        other splits'."""
        self.elsewhere = len(records) - len(split_records)

    def skips(self) -> str:
        """The skipped files counted by reason, with an example of each ("" when none)."""
        return "; ".join(f"{reason}: {len(files)} (e.g. '{files[0][0]}')" for reason, files in self.skipped.items())

    def lines(self, named: set[Path]) -> list[str]:
        """The summary line, then one line per skipped file not in `named` (which it adds to)."""
        skipped = sum(len(files) for files in self.skipped.values())
        folders = ", ".join(f"'{folder}'" for folder in self.folders) if len(self.folders) <= 3 else \
            f"{len(self.folders)} folders below '{os.path.commonpath(self.folders)}'"
        line = (f"Dataset '{self.dataset}', {self.split} split: {self.found} files found in {folders}; "
                f"{self.used} images used" + (f", {self.elsewhere} in the other splits" if self.elsewhere else ""))
        if skipped:
            counts = ", ".join(f"{reason}: {len(files)}" for reason, files in self.skipped.items())
            line += f"; {skipped} skipped ({counts})"
        line += "".join(f"; {note}" for note in self.notes) + "."
        return [line, *self.skipped_lines(named)]

    def skipped_lines(self, named: set[Path]) -> list[str]:
        """One line per skipped file not in `named` (which it adds to), MAX_NAMED per reason."""
        out = []
        for reason, files in self.skipped.items():
            fresh = [(path, detail) for path, detail in files if path not in named]
            named.update(path for path, _ in fresh)
            out += [f"  skipped '{path}': {detail or reason}" for path, detail in fresh[:MAX_NAMED]]
            if len(fresh) > MAX_NAMED:
                out.append(f"  ... and {len(fresh) - MAX_NAMED} more ({reason})")
        return out


def files_report(inventories: Iterable[Inventory | None]) -> str:
    """The lines of the inventories (None: a dataset not read from files), each skipped file named
    once; "" when there are none."""
    named: set[Path] = set()
    return "\n".join(line for inventory in inventories if inventory is not None for line in inventory.lines(named))
