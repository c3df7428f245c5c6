"""``python -m router`` is the ``omniroute`` command."""

from router.cli import main

main()
