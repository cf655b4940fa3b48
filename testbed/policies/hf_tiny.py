"""Offline stand-ins for real weights: a word-level tokenizer trained on the task's own text and
Qwen2-architecture models built from a config (as TRL and transformers build theirs for tests),
from the tests' tiny one to the scale ladder's rungs."""

from __future__ import annotations

from collections.abc import Sequence


def train_tokenizer(texts: Sequence[str]):
    """A word-level ``PreTrainedTokenizerFast`` over ``texts``, the search tags as ordinary tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from testbed.envs.text.task import TAGS

    specials = ["<pad>", "<unk>", "<bos>", "<eos>"]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator(list(texts), trainers.WordLevelTrainer(special_tokens=specials))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>", eos_token="<eos>"
    )
    fast.add_tokens(list(TAGS))
    return fast


def qwen2_model(
    vocab_size: int,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 4,
    max_len: int = 512,
    seed: int | None = 0,
    mlp_ratio: int = 2,
):
    """A randomly initialised ``Qwen2ForCausalLM`` (grouped-query attention with half as many KV
    heads as query heads where ``heads`` is even; tied embeddings), seeded by ``seed`` (None: the
    caller has seeded torch)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if seed is not None:
        torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=mlp_ratio * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads // 2 if heads % 2 == 0 else heads,
        max_position_embeddings=max_len,
        tie_word_embeddings=True,
    )
    return Qwen2ForCausalLM(cfg)
