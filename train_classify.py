#!/usr/bin/env python
"""Train a face embedding by classification (AM-softmax / ArcFace / softmax) or the angular prototypical loss
(reports 001 and 003): ``python train_classify.py [--preset thinresnet34-amsoftmax] [flags]``.

Same as ``kerasface train-classify`` (and ``kerasface train --preset <a classification preset>``);
``python train_classify.py --help`` lists the flags.
"""

import sys

from kerasface.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-classify", *sys.argv[1:]]))
