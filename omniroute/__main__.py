"""``python -m omniroute`` is the ``omniroute`` command."""

from .cli import main

main()
