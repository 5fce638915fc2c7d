"""Pascal VOC 2012 instance masks (natural images) as in the WeSAM paper: the natural clean images
table, columns "VOC box / point / poly" (configs/paper/results.py, table "natural").

The authors' settings and code version (paper.code; the default, release, runs 5 epochs): configs/paper/common.py.
The 6:1 interleave of the 2,913 SegmentationObject masks gives 2,497 training images, so 5 x 2,497 =
12,485 steps, evaluated once per epoch (2,497 steps) as the authors did.

    python adaptation.py --config configs/paper/voc2012.py [prompt=point|coarse]
"""

from configs.paper.common import paper_config

config = paper_config("voc2012", root="data/voc2012", train_images=2497)
