"""The scale-up adapter on CPU, offline: text task with BM25, HF policy in our trainer, TRL, verl."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("trl")

from testbed.config import with_overrides
from testbed.envs import World, WorldConfig
from testbed.envs.text.bm25 import BM25Retriever
from testbed.envs.text.qa_data import TextQA
from testbed.envs.text.task import em_f1, normalize_answer, text_core
from testbed.policies.hf_tiny import train_tokenizer
from testbed.rollout import PolicyAgent, rollout
from testbed.run import RunConfig, build_trainer

SMALL = {
    "task.world.kind": "fixed",
    "policy.kind": "hf",
    "trainer.n_updates": "1",
    "trainer.questions_per_batch": "2",
    "trainer.group_size": "4",
    "trainer.minibatches": "2",
    "trainer.eval_every": "1",
    "trainer.eval_episodes": "4",
    "objective.name": "sapo",
}


@pytest.fixture(scope="module")
def qa() -> TextQA:
    return TextQA.from_world(World(WorldConfig(kind="fixed")))


@pytest.fixture(scope="module")
def tokenizer(qa):
    from testbed.envs.text.task import corpus_words

    return train_tokenizer(corpus_words(qa))


def test_answer_normalisation_and_scores() -> None:
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert em_f1("the e7", "e7") == (1.0, 1.0)
    em, f1 = em_f1("e7 e8", "e7")
    assert em == 0.0 and f1 == pytest.approx(2 / 3)


def test_bm25_plugs_into_the_simulated_retriever_protocol() -> None:
    world = World(WorldConfig())
    bm25 = BM25Retriever(
        [world.doc_text(d) for d in range(len(world.docs))], top_k=3, decode=world.vocab.decode
    )
    v = world.vocab
    queries = np.array([[v.entity(5), v.relation(2)], [v.entity(0), v.relation(1)]])
    docs = bm25.retrieve(queries, np.random.default_rng(0))
    assert docs.shape == (2, 3)
    assert world.doc_id(5, 2) in docs[0] and world.doc_id(0, 1) in docs[1]


def test_text_task_scores_a_scripted_correct_episode(qa, tokenizer) -> None:
    from testbed.envs import TaskConfig
    from testbed.envs.text.task import text_task_config

    core = text_core(text_task_config(TaskConfig()), 1, tokenizer, qa)
    world = World(WorldConfig(kind="fixed"))
    q = 0
    core.reset(np.array([q]))
    e = int(world.questions["start"][q])
    rng = np.random.default_rng(0)

    def write(text: str):
        out = None
        for tok in tokenizer(text, add_special_tokens=False)["input_ids"]:
            out = core.step(np.array([tok]), rng)
        return out

    for r in world.questions["chain"][q, : world.questions["hops"][q]]:
        out = write(f"<search> e{e} r{r} </search>")
        info = tokenizer.decode(out.obs[0, : out.obs_len[0]].tolist())
        assert info.startswith("<information>") and f"e{e} r{r} e{world.facts[e, r]}" in info
        e = int(world.facts[e, r])
    out = write(f"question ? <answer> e{e} </answer>")  # free words: thinking
    assert out.terminated[0] and out.reward[0] == 1.0
    core.reset(np.array([q]))
    assert write("</answer>").obs_len[0] == 3  # malformed: corrective observation, no crash


class _Scripted(PolicyAgent):
    """Writes a fixed text at every written position (a search, then an answer), whatever the model."""

    def __init__(self, policy, tokenizer, text: str) -> None:
        super().__init__(policy, torch.Generator())
        self.script = tokenizer(text, add_special_tokens=False)["input_ids"]

    def begin(self, core) -> None:
        super().begin(core)
        self.core = core
        self.written = np.zeros(core.batch_size, dtype=np.int64)

    def propose(self, inputs):
        _, logp = super().propose(inputs)  # keeps the model's cache in step with the context
        i = np.minimum(self.written, len(self.script) - 1)
        return torch.as_tensor(np.array(self.script)[i]), logp

    def commit(self, tokens, wrote) -> None:
        self.written += wrote


def test_hf_policy_trains_in_our_trainer() -> None:
    trainer = build_trainer([with_overrides(RunConfig(), SMALL)])
    core: Any = trainer.cores  # the text task's core
    tokenizer = core.task.tokenizer
    # retrieved tokens are never in the loss: a scripted search guarantees there are some
    agent = _Scripted(trainer.policy, tokenizer, "<search> e1 r0 </search> <answer> e2 </answer>")
    eps = np.arange(len(core.question))
    scripted = rollout(agent, core, eps, eps, np.random.default_rng(0))
    close, open_, end = (
        tokenizer.convert_tokens_to_ids(t) for t in ("</search>", "<information>", "</information>")
    )
    answered = 0
    for toks, mask in zip(scripted.tokens.tolist(), scripted.mask.tolist(), strict=True):
        t = toks.index(close)
        assert toks[t + 1] == open_ and mask[t] == 1
        stop = toks.index(end, t + 1)
        assert all(m == 0 for m in mask[t + 1 : stop + 1]) and mask[stop + 1] == 1
        answered += 1
    assert answered == len(eps) and (scripted.searches == 1).all()
    batch = trainer.collect()
    assert batch.mask.sum() > 0 and (batch.mask[:, 0] == 0).all()
    with torch.no_grad():
        recomputed, _ = trainer.policy.score(batch)
    assert torch.allclose(recomputed, batch.behaviour_log_probs, atol=1e-4)  # cached sampling == full pass
    batch.rewards = torch.tensor([1.0, 0, 0, 1, 0, 1, 1, 1])
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    (row,) = trainer.update(batch)
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.policy.parameters(), strict=True))
    assert {"ratio_p05_pos", "sapo_penalty", "zero_grad_frac_all"} <= set(row)


def test_bm25_from_jsonl_and_bad_records(tmp_path) -> None:
    path = tmp_path / "corpus.jsonl"
    lines = [
        '{"id": "a", "text": "paris is the capital of france"}',
        "",
        '{"id": "b", "text": "berlin is in germany"}',
    ]
    path.write_text("\n".join(lines) + "\n")
    bm25 = BM25Retriever.from_jsonl(path, top_k=1)
    assert bm25.search(["capital of france"]).tolist() == [[0]]
    path.write_text('{"id": "a", "body": "no text field"}\n')
    with pytest.raises(ValueError, match=r"corpus\.jsonl:1: a corpus record needs a 'text' field"):
        BM25Retriever.from_jsonl(path)


def test_lora_policy_trains_only_adapters() -> None:
    pytest.importorskip("peft")
    trainer = build_trainer([with_overrides(RunConfig(), {**SMALL, "policy.lora": "true"})])
    batch = trainer.collect()
    batch.rewards = torch.tensor([1.0, 0, 0, 1, 0, 1, 1, 1])
    named = dict(cast(torch.nn.Module, trainer.policy).named_parameters())
    before = {k: p.detach().clone() for k, p in named.items()}
    trainer.update(batch)
    changed = {k for k, p in named.items() if not torch.equal(before[k], p)}
    assert changed and all("lora" in k for k in changed)
