"""Alias: `python experiments/sapo_grid.py [flags]` runs `sapo-testbed experiment sapo_grid`."""

import sys

from testbed.cli import main

main(["experiment", "sapo_grid", *sys.argv[1:]])
