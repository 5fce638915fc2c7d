"""COCO-C (COCO val2017 under one of 15 corruptions at severity 5) as in the WeSAM paper: the COCO-C
table, box prompts, one run per corruption (configs/paper/results.py, table "coco_c").

The authors' settings and code version: configs/paper/common.py; paper.code reads COCO as that
version's loader does (crowd annotations kept, their zero-size rule; at most 151 masks per image in
HEAD's box and point loader, configs/paper/versions.py).
The split is the COCO 2017 one: the 6:1 interleave of val2017 on sorted image ids gives 4,286
training images, about 4,240 once the images without a usable annotation are dropped, so 5 x 4,240 =
21,200 steps per corruption, evaluated once per epoch (4,240 steps) as the authors did. The
corrupted images are made once with `python tools/make_coco_c.py --root data/coco2017`.

    python adaptation.py --config configs/paper/coco_c.py dataset.corruption=fog
"""

from configs.paper.common import paper_config

config = paper_config("coco_c", root="data/coco2017", train_images=4240, corruption="brightness")
