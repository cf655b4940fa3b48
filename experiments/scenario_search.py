"""Alias: `python experiments/scenario_search.py [flags]` runs `sapo-testbed experiment scenario_search`."""

import sys

from testbed.cli import main

main(["experiment", "scenario_search", *sys.argv[1:]])
