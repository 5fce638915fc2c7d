"""CAMO (camouflaged objects, CAMO-V.1.0-CVIU2019) as in the WeSAM paper: the camouflaged-objects
table, columns "CAMO box / point / poly" (configs/paper/results.py, table "camouflaged").

The authors' settings and code version (paper.code; the default, release, runs 5 epochs): configs/paper/common.py.
The official training split has 1,000 images, so 5 x 1,000 = 5,000 steps, evaluated once per epoch
(1,000 steps) on the official test split (250 images) as the authors did.

    python adaptation.py --config configs/paper/camo.py [prompt=point|coarse]
"""

from configs.paper.common import paper_config

config = paper_config("camo", root="data/camo", train_images=1000)
