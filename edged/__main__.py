"""``python -m edged`` runs the CLI, as the ``edged`` script does."""

from edged.cli import main

main()
