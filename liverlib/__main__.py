"""``python -m liverlib``."""

import sys

from liverlib.pipeline.cli import main

sys.exit(main())
