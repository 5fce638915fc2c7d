"""OSD (Object Segmentation Database 0.2, robotic tabletop scenes) as in the WeSAM paper: the robotic-
images table, columns "OSD box / point / poly" (configs/paper/results.py, table "robotic").

The authors' settings and code version (paper.code): configs/paper/common.py. The two code
versions split OSD differently: the first release (paper.code=release, the default) 1:1, giving 56
training images, so 5 x 56 = 280 steps evaluated every 56; HEAD (paper.code=head) 6:1, giving 96.
Most of so short a run is the 250-step warm-up, as it is with the authors' 5 epochs.

    python adaptation.py --config configs/paper/osd.py [prompt=point|coarse]
"""

from configs.paper.common import paper_config

config = paper_config("osd", root="data/osd", train_images=96)
