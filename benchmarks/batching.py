"""Batched generation vs one document at a time, same model, same documents, one run.

Prints docs/s at batch 1 and batch 8 for SmolLM2-135M fp32 on CPU and, last, one JSON line with
their ratio. Batching is why variants have a batch_size: the target is a 1.5x gain.
"""

from __future__ import annotations

import json
import os
import time

from _docs import FIELDS, ocr_texts

from invoicelab.backends.hf import TextLLM
from invoicelab.config import FieldSpec
from invoicelab.prompts import load_prompt

N_DOCS, NEW_TOKENS = 8, 48


def docs_per_s(llm: TextLLM, rendered: list, batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(rendered), batch):
        chunk = rendered[i:i + batch]
        llm.generate([m for m, _ in chunk], [p for _, p in chunk], max_new_tokens=NEW_TOKENS)
    return len(rendered) / (time.perf_counter() - start)


def main() -> None:
    fields = {k: FieldSpec(**v) for k, v in FIELDS.items()}
    prompt = load_prompt("terse-json")
    rendered = [prompt.render(fields, t) for t in ocr_texts(N_DOCS)]
    llm = TextLLM("smollm2-135m-instruct", precision="fp32", num_threads=os.cpu_count())
    docs_per_s(llm, rendered[:2], 2)  # warm-up
    one, eight = docs_per_s(llm, rendered, 1), docs_per_s(llm, rendered, 8)
    print(f"batch 1: {one:.3f} docs/s   batch 8: {eight:.3f} docs/s   ({N_DOCS} docs, {NEW_TOKENS} new tokens)")
    ratio = eight / one
    print(json.dumps({"benchmark": "batching", "metric": "docs_per_s_batch8_over_batch1", "value": round(ratio, 3),
                      "target": ">= 1.5", "met": bool(ratio >= 1.5)}))


if __name__ == "__main__":
    main()
