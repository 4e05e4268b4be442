"""The model families vlmq knows, one row each: plain data, made into ModelSpecs by workers.registry.

Facts come from each family's processor and chat template and from vLLM 0.32's model registry
(vllm/model_executor/models/registry.py). `max_image_edge` is the longest edge the processor
still makes use of at the kwargs given here: the producer never ships a larger image.
Which rows the CPU engine runs here, with a tiny model, is in the README's Models table.
"""

from __future__ import annotations

from typing import Any

_CHATML = ("<|im_end|>",)  # the stop of every ChatML-templated family
# Qwen2-VL and Qwen2.5-VL share their processor: 14-px patches merged 2×2 (28-px units), a
# pixel budget instead of a fixed size, ChatML turns. 1280 units ≈ 1 MP, 1003 tokens per image.
_QWEN_VL = dict(
    max_image_edge=1024,
    stop=_CHATML,
    mm_processor_kwargs={"min_pixels": 28 * 28 * 4, "max_pixels": 1280 * 28 * 28},
)
_REMOTE_CODE = {"trust_remote_code": True}  # the checkpoint ships its own modelling/processor code

ROWS: tuple[dict[str, Any], ...] = (
    dict(
        family="idefics3",  # SmolVLM-256M/500M/2B-Instruct, Idefics3
        model_types=("idefics3", "smolvlm"),
        architectures=("Idefics3ForConditionalGeneration", "SmolVLMForConditionalGeneration"),
        name_hints=("smolvlm", "idefics3"),
        max_image_edge=512,
        stop=("<end_of_utterance>",),
        # One 512-px tile per image: image splitting multiplies the image tokens by up to 17.
        mm_processor_kwargs={"do_image_splitting": False},
    ),
    dict(
        family="qwen2_5_vl",
        model_types=("qwen2_5_vl",),
        architectures=("Qwen2_5_VLForConditionalGeneration",),
        name_hints=("qwen2.5-vl", "qwen2_5_vl", "qwen2.5vl"),
        **_QWEN_VL,
    ),
    dict(
        family="qwen2_vl",
        model_types=("qwen2_vl",),
        architectures=("Qwen2VLForConditionalGeneration",),
        name_hints=("qwen2-vl", "qwen2_vl"),
        **_QWEN_VL,
    ),
    dict(
        family="qwen3_vl",  # Qwen3-VL dense and MoE: 16-px patches merged 2×2, budget in `size`
        model_types=("qwen3_vl", "qwen3_vl_moe"),
        architectures=("Qwen3VLForConditionalGeneration", "Qwen3VLMoeForConditionalGeneration"),
        name_hints=("qwen3-vl", "qwen3_vl"),
        max_image_edge=1024,
        stop=_CHATML,
        mm_processor_kwargs={"size": {"shortest_edge": 32 * 32 * 4, "longest_edge": 1024 * 32 * 32}},
    ),
    dict(
        family="paligemma",  # PaliGemma and PaliGemma 2 (224/448/896 checkpoints)
        model_types=("paligemma",),
        architectures=("PaliGemmaForConditionalGeneration",),
        name_hints=("paligemma",),  # before gemma3: "paligemma-3b" contains "gemma-3"
        max_image_edge=448,
        system_role=False,
        stop=("<eos>",),
        # PaliGemma checkpoints ship no chat template: the prompt is the user text and a newline;
        # vLLM puts the image tokens and <bos> in front itself.
        chat_template="{% for m in messages %}{% if m['role'] == 'user' %}{% for p in m['content'] %}"
        "{% if p['type'] == 'text' %}{{ p['text'] }}{% endif %}{% endfor %}{% endif %}"
        "{% endfor %}{{ '\\n' }}",
    ),
    dict(
        family="gemma3",  # Gemma 3 4B/12B/27B (the 1B is text only): SigLIP at 896 px, 256 tokens
        model_types=("gemma3",),
        architectures=("Gemma3ForConditionalGeneration",),
        name_hints=("gemma-3-", "gemma3"),
        max_image_edge=896,
        stop=("<end_of_turn>",),
        mm_processor_kwargs={"do_pan_and_scan": False},  # one 896-px view; pan & scan adds crops
    ),
    dict(
        family="internvl",  # InternVL 2/2.5/3 (remote code) and InternVL3-hf: 448-px tiles
        model_types=("internvl_chat", "internvl"),
        architectures=("InternVLChatModel", "InternVLForConditionalGeneration"),
        name_hints=("internvl",),
        max_image_edge=896,
        stop=("<|im_end|>", "<|end|>"),
        mm_processor_kwargs={"max_dynamic_patch": 4},  # up to 4 tiles + a thumbnail, 256 tokens each
        engine_kwargs=_REMOTE_CODE,
    ),
    dict(
        family="llava_onevision",  # LLaVA-OneVision (Qwen2 LM, SigLIP 384 px, any-res grid)
        model_types=("llava_onevision",),
        architectures=("LlavaOnevisionForConditionalGeneration",),
        name_hints=("llava-onevision", "llava_onevision"),
        max_image_edge=768,
        stop=_CHATML,
    ),
    dict(
        family="mistral3",  # Mistral Small 3.1/3.2, Magistral Small: Pixtral vision, 28-px units
        model_types=("mistral3",),
        architectures=("Mistral3ForConditionalGeneration",),
        name_hints=("mistral-small-3", "magistral-small", "mistral3"),
        max_image_edge=1540,
        stop=("</s>",),
    ),
    dict(
        family="pixtral",  # Pixtral-12B in Mistral's own format (params.json, tekken.json)
        model_types=("pixtral",),
        architectures=("PixtralForConditionalGeneration",),
        name_hints=("pixtral",),
        max_image_edge=1024,
        stop=("</s>",),
        engine_kwargs={"tokenizer_mode": "mistral", "config_format": "mistral", "load_format": "mistral"},
    ),
    dict(
        family="phi3_v",
        model_types=("phi3_v",),
        architectures=("Phi3VForCausalLM",),
        name_hints=("phi-3-vision", "phi-3.5-vision"),
        max_image_edge=1344,
        stop=("<|end|>",),
        engine_kwargs=_REMOTE_CODE,
        mm_processor_kwargs={"num_crops": 4},
    ),
    dict(
        family="phi4mm",  # Phi-4-multimodal-instruct; its vision LoRA is not applied by vlmq
        model_types=("phi4mm",),
        architectures=("Phi4MMForCausalLM",),
        name_hints=("phi-4-multimodal",),
        max_image_edge=1344,
        stop=("<|end|>", "<|endoftext|>"),
        mm_processor_kwargs={"dynamic_hd": 16},
        engine_kwargs=_REMOTE_CODE,
    ),
    dict(
        family="minicpmv",  # MiniCPM-V 2.6, MiniCPM-o 2.6, MiniCPM-V 4 (remote code): 448-px slices
        model_types=("minicpmv", "minicpmo"),
        architectures=("MiniCPMV", "MiniCPMO"),
        name_hints=("minicpm-v", "minicpm-o"),
        max_image_edge=1344,
        stop=("<|im_end|>", "<|endoftext|>"),
        engine_kwargs=_REMOTE_CODE,
    ),
    dict(
        family="glm4v",  # GLM-4.1V-Thinking, GLM-4.5V: Qwen-style 28-px units
        model_types=("glm4v", "glm4v_moe"),
        architectures=("Glm4vForConditionalGeneration", "Glm4vMoeForConditionalGeneration"),
        name_hints=("glm-4.1v", "glm-4.5v", "glm4v"),
        max_image_edge=1024,
        stop=("<|user|>", "<|endoftext|>", "<|observation|>"),
    ),
    dict(
        family="kimi_vl",  # Kimi-VL-A3B Instruct/Thinking: MoonViT at native resolution
        model_types=("kimi_vl",),
        architectures=("KimiVLForConditionalGeneration",),
        name_hints=("kimi-vl",),
        max_image_edge=1024,
        stop=_CHATML,
        engine_kwargs=_REMOTE_CODE,
    ),
    dict(
        family="molmo",  # Molmo 7B/72B (remote code): 336-px crops; its template has no system turn
        model_types=("molmo",),
        architectures=("MolmoForCausalLM",),
        name_hints=("molmo",),
        max_image_edge=1008,
        stop=("<|endoftext|>",),
        system_role=False,
        engine_kwargs=_REMOTE_CODE,
    ),
    dict(
        family="llama4",  # Llama 4 Scout / Maverick: 336-px tiles; Scout needs ~4 80-GB GPUs (TP 4)
        model_types=("llama4",),
        architectures=("Llama4ForConditionalGeneration",),
        name_hints=("llama-4-", "llama4"),
        max_image_edge=1344,
        stop=("<|eot|>", "<|eom|>"),
    ),
    dict(
        family="mllama",  # Llama 3.2 Vision 11B/90B
        model_types=("mllama",),
        architectures=("MllamaForConditionalGeneration",),
        name_hints=("llama-3.2-11b-vision", "llama-3.2-90b-vision", "llama-3.2-vision", "mllama"),
        max_image_edge=1120,
        stop=("<|eot_id|>",),
        unsupported=(
            "vLLM removed Llama 3.2 Vision (MllamaForConditionalGeneration) after 0.10.2, and this "
            "install has vLLM {vllm}; use Llama 4 Scout (meta-llama/Llama-4-Scout-17B-16E-Instruct, "
            "family llama4), or a current VLM of similar size such as Qwen2.5-VL-7B or Gemma 3 12B"
        ),
    ),
)
