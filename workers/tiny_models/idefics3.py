"""Tiny SmolVLM-architecture model (Idefics3): registry family `idefics3`."""

from __future__ import annotations

from pathlib import Path

from workers.tiny_models.base import bpe_tokenizer, text_config, vision_config

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
CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}: {{ message['content'] }}"
    "{% else %}{% if message['content'][0]['type'] == 'image' %}:{% else %}: {% endif %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] == 'image' %}<image>{% endif %}{% endfor %}{% endif %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)


def write(out: Path) -> None:
    """Model, tokenizer and processor into `out` (the caller seeds torch and marks the folder)."""
    import transformers

    tokenizer = bpe_tokenizer(SPECIAL_TOKENS, bos="<|im_start|>", eos="<end_of_utterance>", pad="<|endoftext|>")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS[:4]}
    config = transformers.Idefics3Config(
        image_token_id=ids["<image>"],
        pad_token_id=ids["<|endoftext|>"],
        scale_factor=SCALE_FACTOR,
        vision_config=vision_config(IMAGE_SIZE, PATCH_SIZE),
        text_config=text_config(
            "llama",
            len(tokenizer),
            bos_token_id=ids["<|im_start|>"],
            eos_token_id=ids["<end_of_utterance>"],
            pad_token_id=ids["<|endoftext|>"],
        ),
    )
    transformers.Idefics3ForConditionalGeneration(config).eval().save_pretrained(out)
    image_processor = transformers.Idefics3ImageProcessorPil(
        do_image_splitting=False, size={"longest_edge": IMAGE_SIZE}, max_image_size={"longest_edge": IMAGE_SIZE}
    )
    transformers.Idefics3Processor(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_len=IMAGE_SEQ_LEN, chat_template=CHAT_TEMPLATE
    ).save_pretrained(out)
    tokenizer.save_pretrained(out)
