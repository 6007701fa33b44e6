"""``python -m changeover.cli`` — the same as the ``changeover`` command."""

from changeover.cli.fastpath import main

main()
