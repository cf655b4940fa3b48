"""Alias: `python experiments/drift_phase.py [flags]` runs `sapo-testbed experiment drift_phase`."""

import sys

from testbed.cli import main

main(["experiment", "drift_phase", *sys.argv[1:]])
