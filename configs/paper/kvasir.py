"""Kvasir-SEG (polyps in endoscopy images) as in the WeSAM paper: the medical-images table, columns
"Kvasir box / point / poly" (configs/paper/results.py, table "medical").

The authors' settings and code version (paper.code; the default, release, runs 5 epochs): configs/paper/common.py.
The 5:1 split of the 1,000 images gives 834 training images, so 5 x 834 = 4,170 steps, evaluated
once per epoch (834 steps) as the authors did.

    python adaptation.py --config configs/paper/kvasir.py [prompt=point|coarse]
"""

from configs.paper.common import paper_config

config = paper_config("kvasir", root="data/kvasir", train_images=834)
