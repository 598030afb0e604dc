"""``python -m mindbot``: the same as the ``mindbot`` command."""

from mindbot.cli import main

main()
