"""OSD (Object Segmentation Database 0.2, robotic tabletop scenes) as in the WeSAM paper: the robotic-
images table, columns "OSD box / point / poly" (configs/paper/results.py, table "robotic").

The authors' settings and 5-epoch budget: configs/paper/common.py.
The 6:1 interleave of the 111 images gives 96 training images (15 evaluated), so 5 x 96 = 480 steps,
evaluated once per epoch (96 steps) as the authors did. Most of so short a run is the 250-step warm-
up, as it is with the authors' 5 epochs.

    python adaptation.py --config configs/paper/osd.py [prompt=point|coarse]
"""

from configs.paper.common import paper_config

config = paper_config("osd", root="data/osd", train_images=96)
