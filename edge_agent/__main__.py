"""``python -m edge_agent`` runs the ``edge-agent`` command."""

from .cli import main

main()
