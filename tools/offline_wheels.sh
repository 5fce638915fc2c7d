#!/usr/bin/env bash
# Install this repo's packages on a machine that cannot reach the internet but already has torch,
# numpy, scipy, scikit-image and OpenCV (such as our GPU machine, Python 3.12).
#
#   bash tools/offline_wheels.sh download [DIR]   # where pip can download: wheels into DIR (default wheels/)
#   bash tools/offline_wheels.sh install [DIR]    # on the offline machine, from the repo root, DIR sent along
#
# The versions are those pinned in requirements.txt and requirements-nodeps.txt. The wheels are for
# PYTHON_VERSION (default 3.12) on x86-64 Linux; the large packages the offline machine already has
# are left out. imagecorruptions goes in with --no-deps, as on every install (see requirements-nodeps.txt),
# and so does lightning-fabric, whose dependencies (torch among them) come with torch or lightning
# there: resolving them anew would make pip look for another torch. SAM 2 (rf-sam-2) and its
# dependencies go in with --no-deps too, since its declared torch and torchvision are there already.
set -euo pipefail

MODE=${1:?"usage: $0 download|install [DIR]"}
DIR=${2:-wheels}
PYTHON_VERSION=${PYTHON_VERSION:-3.12}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
pinned() { grep -E "^($1)==" "$ROOT/$2"; }
WITH_DEPS=$(pinned "segment-anything|python-box|pycocotools|albumentations" requirements.txt)
NO_DEPS="$(pinned "lightning-fabric|rf-sam-2|hydra-core|omegaconf|portalocker" requirements.txt) \
$(pinned "imagecorruptions" requirements-nodeps.txt)"
# SAM 2's dependencies published only as source archives (pure Python): built into wheels here
SOURCE_ONLY=$(pinned "antlr4-python3-runtime|iopath" requirements.txt)
NO_DEPS_UNPINNED="lightning-utilities"
ALREADY_THERE="numpy|scipy|opencv_python_headless|scikit_image|pillow|torch"

case "$MODE" in
  download)
    platform=(--only-binary=:all: --python-version "$PYTHON_VERSION" --platform manylinux2014_x86_64
              --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64)
    python3 -m pip download "${platform[@]}" -d "$DIR" $WITH_DEPS
    python3 -m pip download "${platform[@]}" --no-deps -d "$DIR" $NO_DEPS $NO_DEPS_UNPINNED
    python3 -m pip wheel --no-deps -w "$DIR" $SOURCE_ONLY
    find "$DIR" -regextype egrep -regex ".*/($ALREADY_THERE)-[^/]*\.whl" -delete
    echo "Wheels for Python $PYTHON_VERSION in $DIR ($(du -sh "$DIR" | cut -f1)); send the folder along."
    ;;
  install)
    python3 -m pip install --no-index --find-links "$DIR" $WITH_DEPS
    python3 -m pip install --no-index --find-links "$DIR" --no-deps $NO_DEPS $NO_DEPS_UNPINNED $SOURCE_ONLY
    ;;
  *)
    echo "usage: $0 download|install [DIR]" >&2
    exit 2
    ;;
esac
