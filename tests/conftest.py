"""Test-wide settings: one torch thread (small ops run faster and CI has two cores), a headless
matplotlib, and derandomised hypothesis under CI so a red run replays exactly."""

import os

import matplotlib
import torch
from hypothesis import settings

matplotlib.use("Agg")
torch.set_num_threads(1)
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
