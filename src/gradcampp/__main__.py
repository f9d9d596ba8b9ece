"""``python -m gradcampp``: the ``gradcampp`` command line."""

import sys

from gradcampp.cli import main

sys.exit(main())
