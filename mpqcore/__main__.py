"""``python -m mpqcore``: the ``mpq`` command."""

import sys

from mpqcore.cli import main

sys.exit(main())
