"""OCID (robotic tabletop and floor scenes) as in the WeSAM paper: the robotic-images table, columns
"OCID box / point / poly" (configs/paper/results.py, table "robotic").

The authors' settings and code version (paper.code; the default, release, runs 5 epochs): configs/paper/common.py.
The 6:1 interleave of the OCID frames (about 2,300 labelled ones; the count used by the paper is not
known) gives about 1,930 training images once the frames without an object are dropped, so about 5 x
1,930 = 9,650 steps, evaluated once per epoch (1,930 steps) as the authors did.

    python adaptation.py --config configs/paper/ocid.py [prompt=point|coarse]
"""

from configs.paper.common import paper_config

config = paper_config("ocid", root="data/ocid", train_images=1930)
