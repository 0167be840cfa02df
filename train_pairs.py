#!/usr/bin/env python
"""Train the report-000 Siamese verifier: ``python train_pairs.py [--preset vargface] [flags]``.

Same as ``kerasface train``; ``python train_pairs.py --help`` lists the flags.
"""

import sys

from kerasface.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
