"""Alias: `python experiments/family.py [flags]` runs `sapo-testbed experiment family`."""

import sys

from testbed.cli import main

main(["experiment", "family", *sys.argv[1:]])
