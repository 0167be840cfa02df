"""``python -m kerasface ...`` = ``kerasface ...``."""

import sys

from kerasface.cli import main

if __name__ == "__main__":
    sys.exit(main())
