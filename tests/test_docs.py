"""The documents' claims stay tied to things that exist: every config the prompt guide cites loads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from invoicelab.config import load_experiment

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "prompts.md"


def cited_configs() -> list[str]:
    return sorted(set(re.findall(r"configs/[\w.-]+\.yaml", GUIDE.read_text(encoding="utf-8"))))


def test_the_prompt_guide_cites_shipped_configs():
    assert len(cited_configs()) >= 4


@pytest.mark.parametrize("config", cited_configs())
def test_each_config_the_guide_cites_is_valid(config):
    exp = load_experiment(ROOT / config)
    assert exp.variants and exp.fields
