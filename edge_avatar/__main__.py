"""``python -m edge_avatar`` is the ``edge-avatar`` command."""

import sys

from edge_avatar.cli import main

sys.exit(main())
