"""sapo-testbed: GRPO-family objectives and SAPO on simulated tool-calling search tasks."""

__version__ = "0.1.0"
