"""Every option of wesam with its default. Do not edit: override in configs/config.py,
in a file given with --config, or on the command line as dotted key=value pairs.

Values marked (paper) are those of the WeSAM paper / authors' code (see docs/differences.md).
"""

base_config = {
    "seed": 1337,  # base random seed; rank r of a multi-device run uses seed + r (paper)
    "out_dir": "runs/default",  # where the config, metrics, logs and checkpoints of a run go
    "accelerator": "auto",  # "cpu", "cuda" or "auto" (CUDA when available)
    "devices": 1,  # number of devices (processes) per node; 2 on a CPU runs DDP over gloo
    "num_nodes": 1,  # machines of a multi-node run, started by torchrun or SLURM (docs/usage.md, "Several machines")
    "strategy": "auto",  # Fabric strategy: "auto", "ddp", "ddp_spawn"
    "precision": "32-true",  # "32-true", "bf16-mixed" or "16-mixed" (16-mixed needs CUDA)
    "num_workers": 0,  # data-loading worker processes per device
    "batch_size": 1,  # training images per device and step (paper: 1)
    "val_batch_size": 1,  # evaluation images per device and step
    "num_steps": 100,  # optimizer steps of the adaptation run
    "eval_interval": 50,  # evaluate on the eval split every this many steps (and at the end)
    "save_interval": 0,  # also write checkpoints/last.ckpt every this many steps between evaluations (0: off)
    "log_interval": 10,  # write losses to TensorBoard every this many steps
    "max_nums": 40,  # at most this many instances per training image, subsampled at random (paper)
    "prompt": "box",  # weak label used as prompt: "box", "point" or "coarse"
    # training prompts from the weak "labels", or "auto": from instances the frozen anchor finds itself, no label read
    # (README, "Adapting with no labels")
    "prompt_source": "labels",
    "num_points": 5,  # positive and negative points per instance for prompt=point (paper: 5 + 5)
    "coarse_as": "box",  # prompt=coarse fed as the polygon's "box" (authors' code) or as a "mask" input (paper text)
    # coarse_as=box: box of the "largest" contour's polygon after the resize, or "authors"
    # (first contour, at native size; docs/differences.md)
    "coarse_polygon": "largest",
    # prompt=point: negatives drawn outside the instance in the "image", or the padded "canvas" too (authors' code)
    "point_negatives": "image",
    # one batched encoder call for the views that share a gradient mode (shared teacher + student;
    # anchor + EMA teacher): same result, fewer calls
    "batch_views": True,
    # recompute the image-encoder blocks in the backward pass instead of storing them (less memory, slower)
    "memory_saving": False,
    "tf32": False,  # CUDA: TF32 matrix products (the authors' code turns them on); no effect on a CPU
    # prompt_source=auto: segment_anything's SamAutomaticMaskGenerator on the anchor (LoRA off), cached in out_dir
    "auto": {
        "points_per_side": 16,  # grid of points_per_side^2 point prompts over each training image
        "points_per_batch": 64,  # point prompts decoded at once (memory, not results)
        "pred_iou_thresh": 0.88,  # keep masks whose predicted IoU is above this
        # keep masks whose stability score (IoU of the mask at logit -1 and +1) is above this
        "stability_score_thresh": 0.95,
        "box_nms_thresh": 0.7,  # box IoU above which the lower-scored of two masks is dropped
        "min_mask_region_area": 0,  # remove holes and islands smaller than this many pixels (0: off)
        # three masks per point, as SAM's everything mode; False: the single-mask output
        # (the shipped vit_small was trained only on it)
        "multimask": True,
        "top_k": 10,  # instances kept per image: the best by predicted IoU x stability score
        # our variant: recompute the instances with the adapted model every this many steps (0: never)
        "refresh_every": 0,
        # where the training split has labels, measure the instances' recall of them (never trained on)
        "diagnostic": True,
        # folder of the cached instances: "" = out_dir/auto_instances; runs on the same images and anchor may share one
        # (each file is checked against its key)
        "cache": "",
    },
    "paper": {
        # the authors' code: "release" (their first code release) or "head" (their later code) sets every option that
        # makes ours that version of theirs (README, "Differences from the authors' code"; configs/paper/versions.py),
        # except those the config file or the command line set; "" sets none
        "code": "",
        "train_images": 0,  # training images of the dataset, from which paper.code derives num_steps and eval_interval
    },
    "dataset": {
        "name": "synthetic",  # dataset loader to use (datasets/__init__.py DATASETS; PREPARE.md)
        "root": "",  # folder of the dataset on disk (unused by "synthetic"); PREPARE.md gives each layout
        "corruption": "gaussian_noise",  # coco_c: the corruption, a folder of <root>/corruption/
        "interleave": 6,  # coco, folder without per-split files, osd: k:1 split, k images to train then 1 to eval
        "coco": {
            "images": "images",  # coco: image folder below root; the json's file_name is relative to it
            "annotations": "annotations.json",  # coco: instances json below root, split by interleave
            "train": "",  # coco: the train split's own instances json below root (overrides the interleave)
            "val": "",  # coco: the val split's own instances json below root
            "test": "",  # coco: the test split's own instances json below root
            "crowd": False,  # COCO-format datasets: keep crowd annotations as instances (authors' loader: True)
            # COCO-format datasets: at most this many annotations per image, in file order (authors' loader: 151);
            # 0: all
            "max_masks": 0,
            # COCO-format datasets: "drop" annotations with a zero-width or zero-height box or no segmentation;
            # "authors": their rule (docs/differences.md)
            "zero_size": "drop",
        },
        "synthetic": {
            # target domain: "none" (source), "camouflage", "medical" or an imagecorruptions type
            "shift": "camouflage",
            "image_size": 128,  # side of the generated square images in pixels
            "num_train": 64,  # training images (only their weak labels are used)
            "num_val": 16,  # validation images
            "num_test": 32,  # test images (the eval split)
            "max_objects": 6,  # at most this many objects per image
        },
        "eval_split": "test",  # split evaluated by adaptation.py and validate.py: "val" or "test"
        # EXIF orientation tags of images and masks: "apply" (masks drawn on the picture as displayed),
        # "ignore" (on the stored pixels), "auto": the loader's convention (PREPARE.md, "EXIF orientation")
        "exif": "auto",
        # evaluation keeps instances whose mask vanished in the resize
        # (authors' code; each scores 1 if its prediction is empty too, else 0)
        "keep_vanished": False,
    },
    "model": {
        # SAM configuration: "vit_b", "vit_l", "vit_h", a small one ("vit_tiny"), or SAM 2's ("sam2.1_hiera_t"...):
        # every model type of models/backbones.py FAMILIES
        "type": "vit_tiny",
        "checkpoint": "",  # SAM weights (.pth or .safetensors); empty means random weights
        "pixel_normalize": True,  # SAM's pixel mean/std normalisation; False feeds RGB/255 as the authors' code
        "pad": "bottom_right",  # padding to a square: "bottom_right" (SAM) or "center" (authors' code)
        # image-encoder attention: "sdpa" (models/attention.py: fused, one call or chunks per shape,
        # precision and gradient mode; same weights) or "sam" (segment_anything's own)
        "attention": "sdpa",
        # torch.compile the image encoder: "off", "inductor" (minutes to compile,
        # then faster: README "Speed and memory") or "aot_eager" (no code generation, for debugging)
        "compile": "off",
        # single-mask decoding of evaluation (Direct included) and predict.py: "meta" as SAM2ImagePredictor on
        # build_sam2's default (an unstable first mask replaced by the best multimask output), "raw" the first mask
        # token; "auto": meta for the official SAM 2 checkpoints, raw for sam2_tiny and sam2_small (their multimask
        # tokens were never trained) and SAM (the same either way). Training always decodes raw (docs/sam2.md)
        "decoding": "auto",
    },
    "lora": {
        "rank": 4,  # LoRA rank of every adapted layer (paper)
        # layers with LoRA (docs/lora_targets.md): "qv" q and v of every image-encoder block's attention (paper),
        # "qkv" q, k and v, "proj" its output projection, "mlp" the block's MLP, "patch_embed"; SAM 2 also "stride4",
        # "stride8": everything that makes that high-resolution map. A layer named twice is adapted once
        "targets": ["qv"],
    },
    "teacher": {
        # "shared": the student on the weak view (paper); "ema": separate EMA LoRA weights (our own variant)
        "mode": "shared",
        "ema_rate": 0.999,  # teacher = rate * teacher + (1 - rate) * student after each step (mode ema)
    },
    "opt": {
        "learning_rate": 1e-4,  # Adam learning rate (paper)
        "weight_decay": 1e-4,  # Adam weight decay (paper)
        "warmup_steps": 250,  # linear learning-rate warm-up (paper)
        "decay_steps": [60000, 86666],  # multiply the learning rate by decay_factor at each of these steps (paper)
        "decay_factor": 0.1,  # learning-rate factor applied at each decay step (paper)
        # warm-up factor step / warmup_steps, the first step at lr 0 (authors' code),
        # instead of (step + 1) / warmup_steps
        "warmup_from_zero": False,
    },
    "loss": {
        # "teacher": its hard mask (WeSAM);
        # "ground_truth": GT masks (with augment.strong False: the paper's Supervised row)
        "target": "teacher",
        "focal": 20.0,  # weight of the focal loss to the teacher's hard mask (paper)
        "dice": 1.0,  # weight of the dice loss to the teacher's hard mask (paper)
        "iou": 1.0,  # weight of the IoU-head MSE (paper)
        "anchor": 1.0,  # weight of the anchor loss (paper)
        "contrastive": 1.0,  # weight of the instance contrastive loss (paper)
        "focal_alpha": 0.8,  # focal loss scale alpha (when num_masks_as_alpha is False)
        "focal_gamma": 2.0,  # focal loss exponent gamma
        "dice_smooth": 1.0,  # dice smoothing of the anchor loss, and of self-training when num_masks_as_alpha is False
        # focal alpha and self-training dice smoothing = instances in the batch, as the authors' code computes;
        # False: focal_alpha and dice_smooth (README, "The method")
        "num_masks_as_alpha": True,
        "temperature": 0.3,  # contrastive temperature (paper)
        # focal term of each pixel's BCE, then the mean ("pixel", authors' later code)
        # or of the mean BCE ("mean", their first release)
        "focal_on": "pixel",
        # BCE from the logits ("logits", exact) or from clamped probabilities
        # ("probabilities", authors' code: a pixel costs at most 100, with no gradient there)
        "focal_bce": "logits",
        # instance masks of the contrastive prototypes: sigmoid > 0.5 ("threshold", authors' later code)
        # or the raw logits as weights ("raw", their first release)
        "contrastive_masks": "threshold",
        "iou_threshold": 0.0,  # logit above which the student's mask counts in the IoU-head target (authors' code: 0.5)
        "iou_empty": 1.0,  # IoU-head target when the student's mask and the target are both empty (authors' code: 0)
    },
    "metric": {
        "threshold": 0.0,  # logit above which a pixel is predicted foreground (authors' code: 0.5)
        "region": "image",  # pixels scored: the resized "image" without padding, or the padded "canvas" (authors' code)
    },
    "augment": {
        "flip": True,  # weak view: random horizontal and vertical flips of image, masks and prompts
        "strong": True,  # strong view: posterize, equalize, sharpen, solarize, brightness/contrast, shadow
        # make both views after the resize to the "input" size, or at the image's "native" size before it
        # (authors' code)
        "views_at": "input",
        # strong view of the "weak" view (flipped with it), or of the "unflipped" image (the authors' first
        # release: the student then sees another geometry than its prompts and pseudo-labels 3 times in 4)
        "strong_from": "weak",
    },
}

# Keys whose value must be one of a fixed set. The names of datasets and synthetic shifts are those of
# their registries (datasets/__init__.py DATASETS, datasets/shifts.py SHIFTS), listed here so that the
# config is checked without importing them (tests/test_config.py keeps the lists equal). model.type and
# lora.targets are not here: their values are those of the model registry's families (models/backbones.py
# FAMILIES), which a family may extend alone; models/__init__.py check_model_config checks them before
# any work.
CHOICES = {
    "dataset.name": ["synthetic", "coco2017", "coco_c", "voc2012", "kvasir", "isic2016", "camo", "cod10k", "chameleon",
                     "ocid", "osd", "coco", "folder"],
    "dataset.synthetic.shift": ["none", "camouflage", "medical", "brightness", "contrast", "defocus_blur",
                                "elastic_transform", "fog", "frost", "gaussian_noise", "glass_blur", "impulse_noise",
                                "jpeg_compression", "motion_blur", "pixelate", "shot_noise", "snow", "zoom_blur",
                                "gaussian_blur", "saturate", "spatter", "speckle_noise"],
    "accelerator": ["auto", "cpu", "cuda"],
    "strategy": ["auto", "ddp", "ddp_spawn"],
    "precision": ["32-true", "bf16-mixed", "16-mixed"],
    "prompt": ["box", "point", "coarse"],
    "prompt_source": ["labels", "auto"],
    "coarse_as": ["box", "mask"],
    "point_negatives": ["image", "canvas"],
    "coarse_polygon": ["largest", "authors"],
    "paper.code": ["", "release", "head"],
    "dataset.coco.zero_size": ["drop", "authors"],
    "augment.views_at": ["input", "native"],
    "augment.strong_from": ["weak", "unflipped"],
    "loss.focal_on": ["pixel", "mean"],
    "loss.focal_bce": ["logits", "probabilities"],
    "loss.contrastive_masks": ["threshold", "raw"],
    "metric.region": ["image", "canvas"],
    "dataset.eval_split": ["val", "test"],
    "dataset.exif": ["auto", "apply", "ignore"],
    "model.pad": ["bottom_right", "center"],
    "model.attention": ["sdpa", "sam"],
    "model.compile": ["off", "inductor", "aot_eager"],
    "model.decoding": ["auto", "meta", "raw"],
    "teacher.mode": ["shared", "ema"],
    "loss.target": ["teacher", "ground_truth"],
}

# The interval of every numeric key (of each number of a list-valued key), written as in
# mathematics: "[" and "]" include the bound, "(" and ")" exclude it; inf means unbounded. Every
# number must also be finite. utils/config.py checks them before any work.
RANGES = {
    "seed": "[0, 2147483647]",  # 31 bits: the seed plus a rank is still a valid NumPy and torch seed
    "devices": "[1, inf)",
    "num_nodes": "[1, inf)",
    "num_workers": "[0, inf)",
    "batch_size": "[1, inf)",
    "val_batch_size": "[1, inf)",
    "num_steps": "[1, inf)",
    "eval_interval": "[1, inf)",
    "save_interval": "[0, inf)",
    "log_interval": "[1, inf)",
    "max_nums": "[1, inf)",
    "num_points": "[1, inf)",
    "auto.points_per_side": "[1, inf)",
    "auto.points_per_batch": "[1, inf)",
    "auto.pred_iou_thresh": "[0, 1]",
    "auto.stability_score_thresh": "[0, 1]",
    "auto.box_nms_thresh": "[0, 1]",
    "auto.min_mask_region_area": "[0, inf)",
    "auto.top_k": "[1, inf)",
    "auto.refresh_every": "[0, inf)",
    "paper.train_images": "[0, inf)",
    "dataset.interleave": "[1, inf)",
    "dataset.coco.max_masks": "[0, inf)",
    "dataset.synthetic.image_size": "[32, inf)",  # the image corruptions' smallest side (datasets/corruptions.py)
    "dataset.synthetic.num_train": "[0, inf)",
    "dataset.synthetic.num_val": "[0, inf)",
    "dataset.synthetic.num_test": "[0, inf)",
    "dataset.synthetic.max_objects": "[1, inf)",
    "lora.rank": "[1, inf)",
    "teacher.ema_rate": "[0, 1)",
    "opt.learning_rate": "(0, 1]",  # above 1 is a typo: the paper uses 1e-4 (ViT-B), the embedded default 4e-3
    "opt.weight_decay": "[0, inf)",
    "opt.warmup_steps": "[0, inf)",
    "opt.decay_steps": "[0, inf)",
    "opt.decay_factor": "[0, inf)",
    "loss.focal": "[0, inf)",
    "loss.dice": "[0, inf)",
    "loss.iou": "[0, inf)",
    "loss.anchor": "[0, inf)",
    "loss.contrastive": "[0, inf)",
    "loss.focal_alpha": "[0, inf)",
    "loss.focal_gamma": "[0, inf)",
    "loss.dice_smooth": "(0, inf)",  # 0 divides 0 by 0 where a mask and its target are both empty
    "loss.temperature": "(0, inf)",  # divides the similarities
    "loss.iou_threshold": "(-inf, inf)",  # a logit
    "loss.iou_empty": "[0, 1]",  # an IoU
    "metric.threshold": "(-inf, inf)",  # a logit
}

# Keys that name a file or folder: `~` and $VARIABLES in them are expanded where the config is read
# (utils/config.py), so that every reader and writer (TensorBoard too) sees the same path.
PATH_KEYS = ("out_dir", "auto.cache", "dataset.root", "dataset.coco.images", "dataset.coco.annotations",
             "dataset.coco.train", "dataset.coco.val", "dataset.coco.test", "model.checkpoint")
