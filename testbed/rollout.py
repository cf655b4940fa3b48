"""Rollouts: a policy plays a batch of episodes in a batched environment core and yields a Batch.

Token grain: every episode advances one position per step, so one KV-cached forward serves the
whole batch. A position holds either a token the policy samples or a *forced* token (the prompt,
or a retrieved ``<information>`` block queued by the environment) that is fed through the model
with mask 0. Tabular grain: one action per step from the current state.
"""

from __future__ import annotations

import numpy as np
import torch

from testbed.batch import Batch
from testbed.envs import TabularSearchBatch, TokenSearchBatch
from testbed.policies import Policy


def _sample(logits: torch.Tensor, gen: torch.Generator, greedy: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Next tokens and their log-probs (on the CPU), sampled where the logits live."""
    logp = torch.log_softmax(logits.float(), -1)
    tok = logp.argmax(-1) if greedy else torch.multinomial(logp.exp(), 1, generator=gen).squeeze(-1)
    return tok.cpu(), logp.gather(-1, tok[:, None]).squeeze(-1).cpu()


def _generator_for(policy: Policy, gen: torch.Generator) -> torch.Generator:
    """``gen`` itself on the CPU; on an accelerator, a generator there seeded from ``gen``."""
    device = getattr(policy, "device", torch.device("cpu"))
    if torch.device(device).type == "cpu":
        return gen
    seed = int(torch.randint(0, 2**62, (1,), generator=gen))
    return torch.Generator(device=device).manual_seed(seed)


@torch.no_grad()
def rollout(
    policy: Policy,
    core: TokenSearchBatch | TabularSearchBatch,
    questions: np.ndarray,
    group_ids: np.ndarray,
    rng: np.random.Generator,
    gen: torch.Generator,
    greedy: bool = False,
) -> Batch:
    """One episode per question (questions repeat G times for GRPO groups)."""
    if policy.grain == "tabular":
        return _rollout_tabular(policy, core, questions, group_ids, rng, gen, greedy)
    return _rollout_tokens(policy, core, questions, group_ids, rng, gen, greedy)


def _rollout_tokens(policy, core: TokenSearchBatch, questions, group_ids, rng, gen, greedy) -> Batch:
    b = len(questions)
    prompts = core.reset(questions)
    cap = core.capacity
    qcap = max(core.info_len, *(len(p) for p in prompts))
    queue = np.zeros((b, qcap), dtype=np.int64)
    for i, p in enumerate(prompts):
        queue[i, : len(p)] = p
    q_len = np.array([len(p) for p in prompts])
    q_pos = np.ones(b, dtype=np.int64)  # position 0 (<bos>) is written below
    tokens = torch.full((b, cap), core.vocab.pad, dtype=torch.long)
    tokens[:, 0] = torch.as_tensor(queue[:, 0])
    mask = torch.zeros(b, cap)
    blp = torch.zeros(b, cap)
    rewards = np.zeros(b)
    state = policy.start(b)
    sample_gen = _generator_for(policy, gen)
    rows = np.arange(b)
    end = cap
    for pos in range(1, cap):
        forced = q_pos < q_len
        if core.done.all() and not forced.any():
            end = pos
            break
        sampled, logp = _sample(policy.next_logits(tokens[:, pos - 1], state), sample_gen, greedy)
        writes = ~forced & ~core.done
        queued = queue[rows, np.minimum(q_pos, qcap - 1)]
        tok = np.where(forced, queued, np.where(writes, sampled.numpy(), core.vocab.pad))
        q_pos += forced
        out = core.step(tok, rng, active=writes)
        rewards += out.reward
        w = torch.as_tensor(writes)
        tokens[:, pos] = torch.as_tensor(tok)
        mask[:, pos] = w.float()
        blp[:, pos] = torch.where(w, logp, 0.0)
        got = out.obs_len > 0
        queue[got] = out.obs[got]
        q_len[got] = out.obs_len[got]
        q_pos[got] = 0
    return Batch(
        tokens=tokens[:, :end],
        mask=mask[:, :end],
        behaviour_log_probs=blp[:, :end],
        rewards=torch.as_tensor(rewards, dtype=torch.float32),
        group_ids=torch.as_tensor(group_ids),
        question_ids=torch.as_tensor(questions),
        searches=torch.as_tensor(core.searches.copy()),
    )


def _rollout_tabular(policy, core: TabularSearchBatch, questions, group_ids, rng, gen, greedy) -> Batch:
    b = len(questions)
    obs = core.reset(questions)
    horizon = core.config.max_turns + 1
    states = torch.zeros(b, horizon, dtype=torch.long)
    actions = torch.zeros(b, horizon, dtype=torch.long)
    mask = torch.zeros(b, horizon)
    blp = torch.zeros(b, horizon)
    rewards = np.zeros(b)
    for t in range(horizon):
        live = torch.as_tensor(~core.done)
        if not live.any():
            break
        s = torch.as_tensor(obs)
        act, logp = _sample(policy.next_logits(s, None), gen, greedy)
        obs, reward, _, _ = core.step(act.numpy(), rng)
        rewards += reward
        states[:, t], actions[:, t] = s, act
        mask[:, t] = live.float()
        blp[:, t] = torch.where(live, logp, 0.0)
    return Batch(
        tokens=actions,
        mask=mask,
        behaviour_log_probs=blp,
        rewards=torch.as_tensor(rewards, dtype=torch.float32),
        group_ids=torch.as_tensor(group_ids),
        question_ids=torch.as_tensor(questions),
        searches=torch.as_tensor(core.hops_done.copy()),
        states=states,
    )
