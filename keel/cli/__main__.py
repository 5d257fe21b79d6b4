"""`python -m keel.cli`: the same entry point as the `keel` script."""

import sys

from keel.cli import main

sys.exit(main())
