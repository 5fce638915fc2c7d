"""Merge a WeSAM adapter into SAM (or SAM 2) and write a plain state dict, so that the official
tools (segment_anything's SamPredictor, sam2's SAM2ImagePredictor, the automatic mask generators...)
use the adapted model.

    python tools/export.py --ckpt ADAPTER --out merged.pth [--config RUN/config.json] [key=value ...]

ADAPTER is a run's best-lora.safetensors / last-lora.safetensors or last.ckpt. Without --config,
the config.json of the run that wrote ADAPTER is used (else configs/config.py); its
model.type and model.checkpoint give the SAM the adapter is merged into. The line printed says how to
load the file (its family's export, models/backbones.py FAMILIES); for SAM and SAM 2:

    from segment_anything import sam_model_registry
    sam = sam_model_registry["vit_b"](checkpoint="merged.pth")      # vit_b, vit_l, vit_h
    from models.sam1 import build_sam
    sam = build_sam("vit_small", "merged.pth")                       # vit_tiny, vit_small (this repository)
    from sam2.build_sam import build_sam2                            # SAM 2: {"model": state_dict}, as Meta's files
    from sam2.sam2_image_predictor import SAM2ImagePredictor
    sam2 = build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", "merged.pt", device="cpu")   # official configurations
    predictor = SAM2ImagePredictor(sam2)                             # or SAM2AutomaticMaskGenerator(sam2)
    from models.sam2 import build_sam2_model, image_predictor, mask_generator
    sam2 = build_sam2_model("sam2_small", "merged.pt")               # sam2_tiny, sam2_small(256) (this repository)
    predictor = image_predictor(sam2)                                # or mask_generator(sam2, ...)
build_sam2's apply_postprocessing (default True) decides how a SAM2ImagePredictor decodes a single mask:
the line printed sets it as the config's model.decoding does for predict.py and validate.py (True for
"meta", the default of the official checkpoints; False for "raw", the default of the small SAM 2s made here,
whose multimask tokens were never trained), so the predictor's masks are predict.py's. The package's
predictor and generator hard-code the feature sizes of a 1024 px model: image_predictor and
mask_generator give them those of the smaller ones.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.checkpoint import load_student_adapter  # noqa: E402
from engine.checks import check_outputs, config_inputs, run_main  # noqa: E402
from models import build_wesam  # noqa: E402
from models.backbones import evaluation_decoding, exported_checkpoint  # noqa: E402
from models.lora import merged_state_dict  # noqa: E402
from utils.config import config_of, load_config  # noqa: E402
from utils.files import check_output, path_argument, write_torch  # noqa: E402


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=path_argument, required=True, help="adapter .safetensors or a run's last.ckpt")
    parser.add_argument("--out", type=path_argument, required=True,
                        help="the merged SAM state dict to write (.pth): a new file, not an input nor a run's file")
    parser.add_argument("--config", type=path_argument, help="the run's config.json (default: the one beside the "
                                                             "adapter's run, else configs/config.py)")
    parser.add_argument("overrides", nargs="*",
                        help="dotted config overrides, e.g. model.checkpoint=sam_vit_b_01ec64.pth")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> Path:
    args = parse_args(argv)
    out = check_output(args.out, "--out")
    config = config_of(args.config, args.ckpt)
    cfg = load_config(config, args.overrides)
    check_outputs([("--out", out)], [("--ckpt", args.ckpt), *config_inputs(cfg, config)])
    model = build_wesam(cfg)
    load_student_adapter(model.sam, args.ckpt, cfg.model.type, cfg.lora.rank, cfg.lora.targets)
    data, loader = exported_checkpoint(cfg.model.type, merged_state_dict(model.sam), out,
                                       evaluation_decoding(cfg.model.type, cfg.model.decoding))
    write_torch(out, data)
    print(f"Wrote SAM {cfg.model.type} with the adapter {args.ckpt} merged in (config {config or 'configs/config.py'}) "
          f"to {out}. Load it with {loader}.")
    return out


if __name__ == "__main__":
    run_main(main)
