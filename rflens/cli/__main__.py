"""``python -m rflens.cli``: the same as the ``rflens`` command."""

import sys

from . import main

sys.exit(main())
