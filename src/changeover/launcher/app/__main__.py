"""``python -m changeover.launcher.app [--config launcher.toml]``."""

import sys

from changeover.launcher.app.run import main

sys.exit(main())
