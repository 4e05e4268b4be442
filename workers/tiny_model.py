"""Build a tiny random-weight SmolVLM-architecture (Idefics3) model into a folder, offline.

No machine here can download weights, yet the real vLLM engine must run in CI. This model has
the real architecture, tokenizer, processor and chat template, so vLLM loads and runs it exactly
as it would SmolVLM; its outputs are random text and mean nothing. Built in a few seconds,
under 2 MB. Parameters follow ../shared/DESIGN.md §5 (CPU attention needs head_dim 64).

    python -m workers.tiny_model ./.models/tiny-smolvlm
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

IMAGE_SIZE, PATCH_SIZE, SCALE_FACTOR = 192, 8, 2
IMAGE_SEQ_LEN = (IMAGE_SIZE // PATCH_SIZE) ** 2 // SCALE_FACTOR**2  # 144 tokens: fills whole KV blocks
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<end_of_utterance>",
    "<image>",
    "<fake_token_around_image>",
    "<global-img>",
    *[f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)],
]
CORPUS = [
    "A mountain lake at sunrise with pine trees and mist over the water.",
    "A portrait of a person smiling in soft window light, plain background.",
    "City street at night with neon signs, wet asphalt and tall buildings.",
    "A dog running on the beach; waves, sand and a clear blue sky.",
    'Category A B C D E. {"score": 7, "reasoning": "sharp, well exposed, good composition"}',
    "User: Assistant: System: Describe this image in two sentences. 0 1 2 3 4 5 6 7 8 9 10",
]
CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}: {{ message['content'] }}"
    "{% else %}{% if message['content'][0]['type'] == 'image' %}:{% else %}: {% endif %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] == 'image' %}<image>{% endif %}{% endfor %}{% endif %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[3:],
        model_max_length=1024,
    )


def build_tiny_model(out_dir: str | Path, seed: int = 0) -> Path:
    """Write the model, tokenizer and processor into `out_dir`; return the folder."""
    import torch
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
    )

    out = Path(out_dir)
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tokenizer = _tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS[:4]}
    config = Idefics3Config(
        image_token_id=ids["<image>"],
        pad_token_id=ids["<|endoftext|>"],
        scale_factor=SCALE_FACTOR,
        vision_config=dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=1,
            num_attention_heads=1,
            image_size=IMAGE_SIZE,
            patch_size=PATCH_SIZE,
        ),
        text_config=dict(
            model_type="llama",
            vocab_size=len(tokenizer),
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=64,
            max_position_embeddings=1024,
            bos_token_id=ids["<|im_start|>"],
            eos_token_id=ids["<end_of_utterance>"],
            pad_token_id=ids["<|endoftext|>"],
        ),
    )
    model = Idefics3ForConditionalGeneration(config).eval()
    model.save_pretrained(out)
    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=False,
        size={"longest_edge": IMAGE_SIZE},
        max_image_size={"longest_edge": IMAGE_SIZE},
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=IMAGE_SEQ_LEN,
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "TINY_RANDOM_MODEL.json").write_text(
        json.dumps({"note": "random weights, built by workers.tiny_model; outputs are noise"})
    )
    return out


if __name__ == "__main__":
    print(build_tiny_model(sys.argv[1] if len(sys.argv) > 1 else ".models/tiny-smolvlm"))
