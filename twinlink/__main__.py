"""``python -m twinlink`` is the ``twinlink`` command."""

import sys

from .cli import main

sys.exit(main())
