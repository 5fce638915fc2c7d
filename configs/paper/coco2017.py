"""COCO 2017 (natural images) as in the WeSAM paper: the natural clean images table, columns "COCO box
/ point / poly" (configs/paper/results.py, table "natural").

The authors' settings and code version: configs/paper/common.py; paper.code reads COCO as that
version's loader does (crowd annotations kept, their zero-size rule; at most 151 masks per image in
HEAD's box and point loader, configs/paper/versions.py).
Only COCO val2017 is used: its 6:1 interleave on sorted image ids gives 4,286 training images, about
4,240 once the images without a usable annotation are dropped, so 5 x 4,240 = 21,200 steps,
evaluated once per epoch (4,240 steps) as the authors did.

    python adaptation.py --config configs/paper/coco2017.py [prompt=point|coarse]
"""

from configs.paper.common import paper_config

config = paper_config("coco2017", root="data/coco2017", train_images=4240)
