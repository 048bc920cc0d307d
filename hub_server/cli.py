"""`python -m hub_server.cli` and `from hub_server import cli`: the `adapterhub` command, which lives
in its own package (clients/adapterhub-cli, importable as `adapterhub_cli`) so it installs without
the server."""

import sys

from adapterhub_cli.cli import *  # noqa: F403
from adapterhub_cli.cli import (
    EXIT_ERROR,
    EXIT_NETWORK,
    EXIT_REJECTED,
    EXIT_USAGE,
    build_parser,
    main,
)

__all__ = ["EXIT_ERROR", "EXIT_NETWORK", "EXIT_REJECTED", "EXIT_USAGE", "build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
