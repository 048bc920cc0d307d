"""The `adapterhub` command line, a client of the hub's REST API (needs only requests and tqdm)."""

from adapterhub_cli.cli import main

__all__ = ["main"]
