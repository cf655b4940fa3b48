"""Simulated tool-calling search tasks at two grains, registered with Gymnasium.

    import testbed  # registers the environments
    gymnasium.make("testbed/SearchTokens-v0", max_turns=4, world={"n_entities": 24})
    gymnasium.make("testbed/SearchTabular-v0")

Add an environment: a batched core (numpy over the batch) beside ``tokens.py``/``tabular.py``, a
``gym.Env`` over it in ``gym_envs.py``, a ``register`` call below, and the env tests.
"""

from gymnasium.envs.registration import register, registry

from testbed.envs.gym_envs import TabularSearchEnv, TokenSearchEnv
from testbed.envs.retriever import Retriever, RetrieverConfig, SimulatedRetriever
from testbed.envs.tabular import TabularSearchBatch
from testbed.envs.task import TaskConfig
from testbed.envs.tokens import TokenSearchBatch, TokenStep
from testbed.envs.world import Episodes, Vocab, World, WorldConfig

for _id, _entry, _vector in (
    (
        "testbed/SearchTokens-v0",
        "testbed.envs.gym_envs:TokenSearchEnv",
        "testbed.envs.vector:TokenSearchVectorEnv",
    ),
    (
        "testbed/SearchTabular-v0",
        "testbed.envs.gym_envs:TabularSearchEnv",
        "testbed.envs.vector:TabularSearchVectorEnv",
    ),
):
    if _id not in registry:
        register(id=_id, entry_point=_entry, vector_entry_point=_vector, max_episode_steps=None)

__all__ = [
    "Episodes",
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
