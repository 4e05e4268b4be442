"""Tiny PaliGemma-architecture model (SigLIP tower, Gemma LM): registry family `paligemma`.

Like the real checkpoints it ships no chat template: the registry row supplies one, and this
model is how the tests show that it works.
"""

from __future__ import annotations

from pathlib import Path

from workers.tiny_models.base import bpe_tokenizer, text_config, vision_config

IMAGE_SIZE, PATCH_SIZE = 64, 8  # 64 image tokens
SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>"]


def write(out: Path) -> None:
    """Model, tokenizer and processor into `out` (the caller seeds torch and marks the folder)."""
    import transformers

    tokenizer = bpe_tokenizer(SPECIAL_TOKENS, bos="<bos>", eos="<eos>", pad="<pad>")
    image_processor = transformers.SiglipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    image_processor.image_seq_length = (IMAGE_SIZE // PATCH_SIZE) ** 2
    processor = transformers.PaliGemmaProcessor(
        image_processor=image_processor, tokenizer=tokenizer
    )  # adds <image>, <locNNNN>
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<pad>", "<eos>", "<bos>", "<image>")}
    config = transformers.PaliGemmaConfig(
        image_token_index=ids["<image>"],
        vocab_size=len(tokenizer),
        pad_token_id=ids["<pad>"],
        projection_dim=128,
        hidden_size=128,
        vision_config=vision_config(IMAGE_SIZE, PATCH_SIZE, model_type="siglip_vision_model", projection_dim=128),
        text_config=text_config(
            "gemma",
            len(tokenizer),
            num_key_value_heads=1,
            bos_token_id=ids["<bos>"],
            eos_token_id=ids["<eos>"],
            pad_token_id=ids["<pad>"],
        ),
    )
    transformers.PaliGemmaForConditionalGeneration(config).eval().save_pretrained(out)
    processor.save_pretrained(out)
    tokenizer.save_pretrained(out)
