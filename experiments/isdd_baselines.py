"""Alias: `python experiments/isdd_baselines.py [flags]` runs `sapo-testbed experiment isdd_baselines`."""

import sys

from testbed.cli import main

main(["experiment", "isdd_baselines", *sys.argv[1:]])
