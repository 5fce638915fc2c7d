"""The documentation's links resolve, the README stays a guide (short, its set-up commands the CI's, every
docs/ page linked from it), and no file of the repository points outside it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "INSTALL.md", "PREPARE.md",
        *sorted(str(p.relative_to(REPO)) for folder in ("docs", "results") for p in REPO.glob(f"{folder}/**/*.md"))]
README_MAX_LINES = 300  # a guide; the reference lives in docs/
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
# a sibling checkout's shared folder, or an absolute path on one machine (written so that this line does not match)
OUTSIDE = re.compile(r"\.\./shared/|(?<![\w.~-])/work(?=/)")


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: "Differences from the authors' code" -> differences-from-the-authors-code."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown file (a repeated heading gets -1, -2, ... as on GitHub)."""
    counts: dict[str, int] = {}
    found = set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        if match := re.match(r"#{1,6} (.+)", line):
            name = anchor(match.group(1))
            found.add(f"{name}-{counts[name]}" if name in counts else name)
            counts[name] = counts.get(name, 0) + 1
    return found


def links(path: Path) -> list[str]:
    """The targets of the markdown links and images of a file, outside code blocks."""
    return LINK.findall(FENCE.sub("", path.read_text()))


def test_anchor_follows_githubs_rule():
    assert anchor("Differences from the authors' code") == "differences-from-the-authors-code"
    assert anchor("imagecorruptions, installed with --no-deps") == "imagecorruptions-installed-with---no-deps"
    assert anchor("What a run writes (`out_dir`)") == "what-a-run-writes-out_dir"


def test_a_broken_link_is_found(tmp_path):
    (tmp_path / "a.md").write_text("# Top\n\n[ok](#top) [missing](#nowhere) [file](b.md)\n```\n# no\n[code](#x)\n```\n"
                                   "## Top\n")
    assert links(tmp_path / "a.md") == ["#top", "#nowhere", "b.md"]
    assert anchors(tmp_path / "a.md") == {"top", "top-1"}


@pytest.mark.parametrize("doc", DOCS)
def test_every_relative_link_points_to_a_file_or_anchor_that_exists(doc):
    path = REPO / doc
    broken = []
    for target in links(path):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file, _, fragment = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists() or not linked.is_relative_to(REPO):
            broken.append(f"{target}: no file {linked}")
        elif fragment and fragment not in anchors(linked):
            broken.append(f"{target}: no heading with anchor #{fragment} in {linked.name}")
    assert not broken, f"{doc}: " + "; ".join(broken)


def test_the_documentation_covers_docs_and_results_pages():
    assert {"docs/extending.md", "docs/troubleshooting.md", "results/sam2/shift_benchmark.md"} <= set(DOCS)


def test_the_readme_is_a_guide_of_at_most_300_lines():
    lines = len((REPO / "README.md").read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines: move reference text to docs/ and link it"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(REPO / target.partition("#")[0]).resolve() for target in links(REPO / "README.md")}
    pages = sorted(REPO.glob("docs/**/*.md"))
    unlinked = [str(page.relative_to(REPO)) for page in pages if page.resolve() not in linked]
    assert not unlinked, f"README.md links no page {unlinked}"


def test_the_readme_starts_with_the_two_set_up_commands_and_ci_runs_the_second():
    """The README's first code block: install and adapt, install and test; .ci/run is that test command
    (quiet pip aside), so what the README promises is what CI runs."""
    block = re.search(r"^```bash\n(.*?)^```", (REPO / "README.md").read_text(), re.DOTALL | re.MULTILINE).group(1)
    commands = [line for line in block.splitlines() if line and not line.startswith("#")]
    install = ("python3 -m pip install -r requirements.txt && "
               "python3 -m pip install --no-deps -r requirements-nodeps.txt")
    assert commands == [f"{install} && python3 adaptation.py", f"{install} && python3 -m pytest -q"]
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line.startswith("python3")]
    assert [line.replace("pip install -q ", "pip install ") for line in ci] == [commands[1]]


def tracked_text_files() -> list[Path]:
    """The repository's files that git tracks or would add (else every file outside hidden, run and data folders)."""
    try:
        names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                               capture_output=True, check=True).stdout
        paths = [REPO / name for name in names.decode().split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        skipped = {"runs", "data", "checkpoints", "wheels", "__pycache__"}
        paths = [p for p in REPO.rglob("*") if p.is_file() and not any(
            part.startswith(".") or part in skipped for part in p.relative_to(REPO).parts)]
    texts = []
    for path in paths:
        if path.is_file() and b"\0" not in path.read_bytes()[:8192]:
            texts.append(path)
    return texts


def test_no_file_refers_to_a_path_outside_the_repository():
    files = tracked_text_files()
    assert REPO / "README.md" in files and REPO / "tests" / "test_docs.py" in files
    found = [f"{path.relative_to(REPO)}:{number}: {line.strip()}"
             for path in files for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
             if OUTSIDE.search(line)]
    assert not found, "\n".join(found)
