"""``python -m driftwire.streams`` runs the ``driftwire`` CLI."""

from driftwire.streams.cli import main

main()
