"""Tiny randomly initialised vision-language models, built locally for tests (no download).

Each builder writes a folder that ``AutoProcessor`` and ``AutoModelForImageTextToText`` load like a
real checkpoint: a config with a 2-layer vision tower and a 2-layer language model, random weights
saved with ``save_pretrained``, a byte-level BPE tokenizer trained here with the ``tokenizers``
library on a few invoice-like lines (with the family's special tokens and a chat template), and the
family's PIL image processor (torchvision is not installed). Families: LLaVA, Qwen2.5-VL, Idefics3.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FAMILIES = ("llava", "qwen2_5_vl", "idefics3")

ROW_COL = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<|vision_start|>", "<|vision_end|>",
           "<|image_pad|>", "<|video_pad|>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>",
           *ROW_COL]
CORPUS = [
    'Invoice No: INV-2024-0042 Date: 2024-03-05 Total: 1,234.50 EUR',
    '{"invoice_number": "A-17", "invoice_date": "05/03/2024", "vendor_name": "Acme Supplies Ltd", "total": null}',
    "You extract fields from invoices and receipts. Reply with one JSON object and nothing else.",
    "system user assistant Fields: Document text: JSON: Answer with the JSON object only.",
    "invoice_number invoice_date vendor_name total currency null",
    "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ {}[]:,.\"'-_/$",
]

# ChatML, with the family's way of writing an image part; every content is a list of typed parts.
_CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for p in m['content'] %}"
    "{% if p['type'] == 'image' %}IMAGE{% elif p['type'] == 'text' %}{{ p['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# SmolVLM's own template shape: "User:<image>text<end_of_utterance>\nAssistant:".
_SMOLVLM = (
    "<|im_start|>{% for m in messages %}{{ m['role'] | capitalize }}:"
    "{% for p in m['content'] %}{% if p['type'] == 'image' %}<image>{% elif p['type'] == 'text' %}"
    "{{ p['text'] }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
TEMPLATES = {
    "llava": _CHATML.replace("IMAGE", "<image>"),
    "qwen2_5_vl": _CHATML.replace("IMAGE", "<|vision_start|><|image_pad|><|vision_end|>"),
    "idefics3": _SMOLVLM,
}
TEXT = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 4096}


def build_tokenizer(chat_template: str) -> Any:
    """A byte-level BPE tokenizer (at most 512 tokens) trained here, with the special tokens and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=chat_template)


def _ids(tokenizer: Any, *tokens: str) -> list[int]:
    return [tokenizer.convert_tokens_to_ids(t) for t in tokens]


def _text_config(tokenizer: Any, **extra: Any) -> dict[str, Any]:
    eos, pad = _ids(tokenizer, "<|im_end|>", "<|endoftext|>")
    return {**TEXT, "vocab_size": len(tokenizer), "eos_token_id": eos, "pad_token_id": pad, "bos_token_id": pad,
            **extra}


def _llava(tokenizer: Any) -> tuple[Any, Any]:
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaProcessor
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=32)
    config = LlavaConfig(vision_config=vision, text_config=LlamaConfig(**_text_config(tokenizer)),
                         image_token_id=_ids(tokenizer, "<image>")[0], vision_feature_layer=-1)
    images = LlavaImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=8,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=TEMPLATES["llava"])
    return config, processor


def _qwen2_5_vl(tokenizer: Any) -> tuple[Any, Any]:
    from transformers import Qwen2_5_VLConfig
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    image_pad, video_pad, start, end = _ids(tokenizer, "<|image_pad|>", "<|video_pad|>", "<|vision_start|>",
                                            "<|vision_end|>")
    vision = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "patch_size": 14,
              "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": 64, "window_size": 56,
              "fullatt_block_indexes": [1]}
    text = _text_config(tokenizer, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                    "mrope_section": [2, 3, 3]})
    config = Qwen2_5_VLConfig(vision_config=vision, text_config=text, image_token_id=image_pad,
                              video_token_id=video_pad, vision_start_token_id=start, vision_end_token_id=end)
    images = Qwen2VLImageProcessorPil(patch_size=14, merge_size=2, temporal_patch_size=2,
                                      size={"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 256})
    # Qwen2_5_VLProcessor cannot be built here: its video processor needs torchvision. Its files are written
    # by hand below, as a checkpoint holds them, and the backend loads it without the video part.
    return config, _ProcessorFiles("Qwen2_5_VLProcessor", images, tokenizer, TEMPLATES["qwen2_5_vl"])


def _idefics3(tokenizer: Any) -> tuple[Any, Any]:
    from transformers import Idefics3Config, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "image_size": 32, "patch_size": 8}
    config = Idefics3Config(vision_config=vision, text_config=_text_config(tokenizer, model_type="llama"),
                            image_token_id=_ids(tokenizer, "<image>")[0], scale_factor=2)
    images = Idefics3ImageProcessorPil(size={"longest_edge": 4 * 32}, max_image_size={"longest_edge": 32})
    # image_seq_len: (32 / 8) ** 2 patches, merged 2 x 2 by the pixel shuffle -> 4 tokens per tile
    processor = Idefics3Processor(image_processor=images, tokenizer=tokenizer, image_seq_len=4,
                                  chat_template=TEMPLATES["idefics3"])
    return config, processor


class _ProcessorFiles:
    """A processor's files (``processor_config.json``, tokenizer, chat template), saved without the class."""

    def __init__(self, processor_class: str, image_processor: Any, tokenizer: Any, chat_template: str):
        self.processor_class, self.image_processor = processor_class, image_processor
        self.tokenizer, self.chat_template = tokenizer, chat_template

    def save_pretrained(self, folder: str) -> None:
        config = {"image_processor": self.image_processor.to_dict(), "processor_class": self.processor_class}
        (Path(folder) / "processor_config.json").write_text(json.dumps(config, indent=2))
        (Path(folder) / "chat_template.jinja").write_text(self.chat_template)
        self.tokenizer.save_pretrained(folder)


BUILDERS = {"llava": _llava, "qwen2_5_vl": _qwen2_5_vl, "idefics3": _idefics3}


def build(family: str, folder: Path, seed: int = 0) -> Path:
    """Write a tiny random model of ``family`` (see ``FAMILIES``) into ``folder``; return the folder."""
    import torch
    from transformers import AutoModelForImageTextToText

    tokenizer = build_tokenizer(TEMPLATES[family])
    config, processor = BUILDERS[family](tokenizer)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    return folder


def build_all(root: Path) -> dict[str, Path]:
    """Every family's tiny model under ``root/<family>``."""
    return {family: build(family, root / family) for family in FAMILIES}
