"""CHAMELEON (camouflaged animals, 76 images) as in the WeSAM paper: the camouflaged-objects table,
columns "CHAM box / point / poly" (configs/paper/results.py, table "camouflaged").

The authors' settings and code version (paper.code; the default, release, runs 5 epochs): configs/paper/common.py.
The authors have no CHAMELEON loader, so it is split as COD10K: the 4:1 interleave on sorted names
gives 61 training images (15 evaluated), so 5 x 61 = 305 steps, evaluated once per epoch (61 steps).
Most of so short a run is the 250-step warm-up, as it would be with the authors' 5 epochs; how the
paper got its CHAMELEON numbers is not known.

    python adaptation.py --config configs/paper/chameleon.py [prompt=point|coarse]
"""

from configs.paper.common import paper_config

config = paper_config("chameleon", root="data/chameleon", train_images=61)
