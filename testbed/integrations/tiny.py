"""Offline stand-ins for real weights: a word-level tokenizer trained on the task's own text and
a small Qwen2-style model built from a config (as TRL and transformers build theirs for tests)."""

from __future__ import annotations

from collections.abc import Sequence


def train_tokenizer(texts: Sequence[str]):
    """A word-level ``PreTrainedTokenizerFast`` over ``texts``, the search tags as ordinary tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from testbed.integrations.text_task import TAGS

    specials = ["<pad>", "<unk>", "<bos>", "<eos>"]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator(list(texts), trainers.WordLevelTrainer(special_tokens=specials))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>", eos_token="<eos>"
    )
    fast.add_tokens(list(TAGS))
    return fast


def tiny_qwen2(
    vocab_size: int, hidden: int = 32, layers: int = 2, heads: int = 4, max_len: int = 512, seed: int = 0
):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=max_len,
        tie_word_embeddings=True,
    )
    return Qwen2ForCausalLM(cfg)
