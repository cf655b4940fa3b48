"""Simulated tool-calling search tasks at two grains, registered with Gymnasium.

    gymnasium.make("SearchTokens-v0", max_turns=4, world={"n_entities": 24})
    gymnasium.make("SearchTabular-v0")

Add an environment: a batched core (numpy over the batch) beside ``tokens.py``/``tabular.py``, a
``gym.Env`` over it in ``gym_envs.py``, a ``register`` call below, and the env tests.
"""

from gymnasium.envs.registration import register, registry

from testbed.envs.gym_envs import TabularSearchEnv, TokenSearchEnv
from testbed.envs.retriever import Retriever, RetrieverConfig, SimulatedRetriever
from testbed.envs.tabular import TabularSearchBatch
from testbed.envs.tokens import TaskConfig, TokenSearchBatch, TokenStep
from testbed.envs.world import Vocab, World, WorldConfig

for _id, _entry in (
    ("SearchTokens-v0", "testbed.envs.gym_envs:TokenSearchEnv"),
    ("SearchTabular-v0", "testbed.envs.gym_envs:TabularSearchEnv"),
):
    if _id not in registry:
        register(id=_id, entry_point=_entry, max_episode_steps=None)

__all__ = [
    "Retriever",
    "RetrieverConfig",
    "SimulatedRetriever",
    "TabularSearchBatch",
    "TabularSearchEnv",
    "TaskConfig",
    "TokenSearchBatch",
    "TokenSearchEnv",
    "TokenStep",
    "Vocab",
    "World",
    "WorldConfig",
]
