"""COD10K-v2 (camouflaged objects) as in the WeSAM paper: the camouflaged-objects table, columns
"COD10K box / point / poly" (configs/paper/results.py, table "camouflaged").

The authors' settings and code version (paper.code; the default, release, runs 5 epochs): configs/paper/common.py.
Only the COD10K test set is used: its 4:1 interleave on sorted names gives 1,621 training images
(405 evaluated), so 5 x 1,621 = 8,105 steps, evaluated once per epoch (1,621 steps) as the authors
did.

    python adaptation.py --config configs/paper/cod10k.py [prompt=point|coarse]
"""

from configs.paper.common import paper_config

config = paper_config("cod10k", root="data/cod10k", train_images=1621)
