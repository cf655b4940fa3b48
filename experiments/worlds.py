"""Alias: `python experiments/worlds.py [flags]` runs `sapo-testbed experiment worlds`."""

import sys

from testbed.cli import main

main(["experiment", "worlds", *sys.argv[1:]])
