import sys

from adapterhub_cli.cli import main

sys.exit(main())
