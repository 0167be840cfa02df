#!/usr/bin/env python
"""Train a triplet-loss face embedding (report 004, FaceNet NN2).

``python train_triplet.py [--preset facenet-nn2] [flags]``.

Same as ``kerasface train-triplet``; ``python train_triplet.py --help`` lists the flags.
"""

import sys

from kerasface.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-triplet", *sys.argv[1:]]))
