"""A tiny randomly initialised Llama text model with a tokenizer trained here: a real checkpoint folder, no download.

``build(folder)`` writes what ``from_pretrained`` and vLLM load from a local folder: a Llama config
(2 layers, hidden 128, head size 64: a size vLLM's attention kernels take), random weights saved
with ``save_pretrained`` (safetensors), and a byte-level BPE tokenizer trained with the
``tokenizers`` library on a few invoice-like lines, with a ChatML chat template. The answers of a
random model are noise; tests check what the code around it does (shapes, token counts, dtypes,
placement, structured decoding), never the answers' content.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "Invoice No: INV-2024-0042 Date: 2024-03-05 Total: 1,234.50 EUR Vendor: Acme Supplies Ltd",
    '{"invoice_number": "A-17", "invoice_date": "05/03/2024", "vendor_name": "Acme", "total": null}',
    "You extract fields from invoices and receipts. Reply with one JSON object and nothing else.",
    "system user assistant Fields: Document text: JSON: Use null for a field that is not in the document.",
    "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ {}[]:,.\"'-_/$#",
]
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CONFIG = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2,
          "num_key_value_heads": 1, "head_dim": 64, "max_position_embeddings": 2048, "tie_word_embeddings": True}


def build_tokenizer() -> Any:
    """A byte-level BPE tokenizer (about 300 tokens) with ChatML's special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token="<|endoftext|>", chat_template=CHATML)


def build(folder: Path, seed: int = 0) -> Path:
    """Write the tiny model (float32 weights) and its tokenizer into ``folder``; return the folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
    eos, pad = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    config = LlamaConfig(**CONFIG, vocab_size=len(tokenizer), eos_token_id=eos, pad_token_id=pad, bos_token_id=pad)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id, model.generation_config.pad_token_id = eos, pad
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder
