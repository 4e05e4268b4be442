"""What every tiny model shares: a byte-level BPE tokenizer trained on a few lines, a tiny text model.

No machine here can download weights, yet the real vLLM engine must run in CI. A tiny model has
its family's real architecture, tokenizer, processor and chat template, so vLLM loads and runs it
as it would the real checkpoint; its weights are random and its outputs mean nothing. The sizes
follow ../../shared/DESIGN.md §5: the CPU attention kernels need head_dim 64.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CORPUS = [
    "A mountain lake at sunrise with pine trees and mist over the water.",
    "A portrait of a person smiling in soft window light, plain background.",
    "City street at night with neon signs, wet asphalt and tall buildings.",
    "A dog running on the beach; waves, sand and a clear blue sky.",
    'Category A B C D E. {"score": 7, "reasoning": "sharp, well exposed, good composition"}',
    "User: Assistant: System: Describe this image in two sentences. 0 1 2 3 4 5 6 7 8 9 10",
]


def bpe_tokenizer(special_tokens: list[str], *, bos: str, eos: str, pad: str, vocab_size: int = 512, **extra: Any):
    """A PreTrainedTokenizerFast whose first special tokens are `special_tokens`, in order."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special_tokens, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    named = {bos, eos, pad}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        unk_token=pad,
        model_max_length=1024,
        additional_special_tokens=[t for t in special_tokens if t not in named],
        **extra,
    )


def text_config(model_type: str, vocab_size: int, **overrides: Any) -> dict[str, Any]:
    """Two layers, hidden 128, two heads of 64: the smallest shape the CPU kernels run."""
    return {
        **dict(
            model_type=model_type,
            vocab_size=vocab_size,
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=64,
            max_position_embeddings=1024,
        ),
        **overrides,
    }


def vision_config(image_size: int, patch_size: int, **overrides: Any) -> dict[str, Any]:
    """One layer, hidden 64, one head: the vision tower is only there to be run, not to see."""
    return {
        **dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=1,
            num_attention_heads=1,
            image_size=image_size,
            patch_size=patch_size,
        ),
        **overrides,
    }


def is_built(out: Path) -> bool:
    return (out / "config.json").is_file() and (out / "model.safetensors").is_file()


def mark_tiny(out: Path, family: str) -> Path:
    (out / "TINY_RANDOM_MODEL.json").write_text(
        json.dumps({"family": family, "note": "random weights, built by workers.tiny_models; outputs are noise"})
    )
    return out
