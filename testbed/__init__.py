"""sapo-testbed: GRPO-family objectives and SAPO on simulated tool-calling search tasks."""

__version__ = "0.1.0"

import testbed.envs  # noqa: F401  (registers testbed/SearchTokens-v0 and testbed/SearchTabular-v0)
