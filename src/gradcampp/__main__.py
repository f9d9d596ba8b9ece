"""``python -m gradcampp``: the ``gradcampp`` command line.

``python -m`` puts the current directory first on ``sys.path``, where a ``tqdm.py`` or
``jinja2.py`` lying there would replace the real package. gradcampp is imported by then; the
entry is removed so that the command behaves as the installed ``gradcampp`` script does, which
looks up only the module named by ``--model package.module:callable`` in the current directory.
"""

import os
import sys

if sys.path and sys.path[0] in ("", os.getcwd()) and not sys.flags.safe_path:
    del sys.path[0]

from gradcampp.cli import main

sys.exit(main())
