"""Structured output: JSON-schema-constrained decoding against the answer prefix (and a free answer).

One experiment per dataset, each with three ocr-llm variants of the bundled SmolLM2-135M-Instruct
that differ only in ``structured`` (json-schema, prefix, none), all with ``fallback: none`` so
that the accuracy is the model's own; same documents, same prompt, same batches, one run. Datasets:
(a) the shared SROIE receipts (``../shared/data/sroie``, configs/sroie.yaml's fields), (b) the
quickstart's synthetic invoices (configs/quickstart.yaml's dataset and fields).

Prints, per dataset and mode: parse failures (rows whose answer the forgiving parser finds no JSON
object in, or error rows), strict JSON (the raw answer is one JSON object for ``json.loads``), cut
(the answer ran into max_new_tokens), accuracy per field (a failed row counts as wrong), generated
tokens per document and docs/s (documents over the summed wall time of the variant's model calls). The last line is one JSON
object: the parse-failure rate of json-schema over both datasets, target 0.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODES = ("json-schema", "prefix", "none")


def experiment(config: str, root: Path, prompt: str, limit: int | None, max_new_tokens: int) -> object:
    """The config's dataset and fields, three ocr-llm variants differing only in ``structured``."""
    from invoicelab.config import load_experiment

    base = load_experiment(REPO / "configs" / config)
    data = base.model_dump(mode="json", exclude={"variants", "prompts", "output_dir", "store"})
    if limit:
        data["dataset"]["limit"] = limit
    variants = [{"name": mode, "backend": "ocr-llm", "model": "smollm2-135m-instruct", "precision": "fp32",
                 "structured": mode, "fallback": "none", "batch_size": 8, "resources": {"num_cpus": 2},
                 "generation": {"max_new_tokens": max_new_tokens}} for mode in MODES]
    from invoicelab.config import parse_experiment

    return parse_experiment({**data, "name": f"structured-{base.name}", "prompts": [prompt], "variants": variants,
                             "output_dir": str(root / base.name), "store": str(root)})


def strict_json(raw: str | None) -> bool:
    """Whether the raw answer is exactly one JSON object."""
    try:
        return isinstance(json.loads(raw or ""), dict)
    except ValueError:
        return False


def table(results: Path, fields: list[str], max_new_tokens: int) -> dict[str, dict[str, float]]:
    """Per mode: rows, parse failures, strict JSON, cut answers, accuracy per field, tokens out, docs/s."""
    import pandas as pd

    rows = pd.read_parquet(results)
    out = {}
    for mode in MODES:
        r = rows[rows["variant"] == mode]
        failed = r["parse_error"].notna() | r["error"].notna()
        calls = (r["batch_latency_s"] / r["batch_docs"]).sum()
        out[mode] = {"rows": len(r), "parse_fail": float(failed.mean()),
                     "strict": float(r["raw_output"].map(strict_json).mean()),
                     "cut": float((r["tokens_out"] >= max_new_tokens).mean()),
                     **{f: float(r[f"match_{f}"].fillna(False).astype(bool).mean()) for f in fields},
                     "tokens_out": float(r["tokens_out"].mean()), "docs_per_s": len(r) / calls if calls else 0.0}
    return out


def show(name: str, stats: dict[str, dict[str, float]], fields: list[str]) -> None:
    """One table: modes as rows."""
    head = f"{'mode':<12}{'rows':>5}{'parse fail':>11}{'strict JSON':>12}{'cut':>5}" + "".join(
        f"{f[:14]:>15}" for f in fields)
    print(f"\n{name}\n{head}{'tok out':>9}{'docs/s':>8}")
    for mode, s in stats.items():
        cells = "".join(f"{s[f]:>15.0%}" for f in fields)
        print(f"{mode:<12}{s['rows']:>5}{s['parse_fail']:>11.0%}{s['strict']:>12.0%}{s['cut']:>5.0%}{cells}"
              f"{s['tokens_out']:>9.1f}{s['docs_per_s']:>8.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sroie-docs", type=int, default=20, help="SROIE receipts used (the shared split has 20).")
    parser.add_argument("--prompt", default="described-json", help="Prompt id (one, for every mode).")
    args = parser.parse_args()
    from invoicelab.orchestrator.pipeline import run_experiment

    root = Path(tempfile.mkdtemp(prefix="invoicelab-structured-"))
    failures = {mode: [0, 0] for mode in MODES}
    for config, limit, tokens in (("sroie.yaml", args.sroie_docs, 96), ("quickstart.yaml", None, 64)):
        exp = experiment(config, root, args.prompt, limit, tokens)
        result = run_experiment(exp)
        stats = table(result.results, list(exp.fields), tokens)
        show(f"{config} ({exp.dataset.path or 'synthetic'}, prompt {args.prompt}, max_new_tokens {tokens})",
             stats, list(exp.fields))
        for mode, s in stats.items():
            failures[mode][0] += round(s["parse_fail"] * s["rows"])
            failures[mode][1] += s["rows"]
    rates = {mode: n / total for mode, (n, total) in failures.items()}
    print("\nparse failures over both datasets: " + ", ".join(f"{m} {failures[m][0]}/{failures[m][1]}" for m in MODES))
    print(json.dumps({"benchmark": "structured_output", "metric": "parse_failure_rate_json_schema",
                      "value": round(rates["json-schema"], 4), "prefix": round(rates["prefix"], 4),
                      "none": round(rates["none"], 4), "target": "== 0", "met": rates["json-schema"] == 0}))


if __name__ == "__main__":
    main()
