"""ISIC 2016 (skin lesions, dermoscopy; ISBI 2016 challenge Part 1) as in the WeSAM paper: the
medical-images table, columns "ISIC box / point / poly" (configs/paper/results.py, table
"medical").

The authors' settings and code version (paper.code; the default, release, runs 5 epochs): configs/paper/common.py.
The official training split has 900 images, so 5 x 900 = 4,500 steps, evaluated once per epoch (900
steps) on the official test split (379 images) as the authors did.

    python adaptation.py --config configs/paper/isic2016.py [prompt=point|coarse]
"""

from configs.paper.common import paper_config

config = paper_config("isic2016", root="data/isic2016", train_images=900)
