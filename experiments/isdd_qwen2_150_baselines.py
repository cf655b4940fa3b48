"""Alias of `sapo-testbed experiment isdd_qwen2_150_baselines [flags]`."""

import sys

from testbed.cli import main

main(["experiment", "isdd_qwen2_150_baselines", *sys.argv[1:]])
