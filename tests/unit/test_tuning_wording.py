"""What the documents and the CLI help say about tuning on the noise-free control.

`--tune-on control` tunes on controls that train on the same private rows without noise, so
no text may call it free of privacy cost, and docs/PRIVACY.md points a deployment to public or
synthetic data for tuning.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEXTS = ["README.md", "docs/PRIVACY.md", "docs/RESULTS.md", "node/experiments/tuning.py",
         "scripts/experiment.py"]


def words(path: str) -> str:
    """The file's text with line breaks, comment marks and string quotes folded away."""
    text = (ROOT / path).read_text(encoding="utf-8")
    return " ".join(re.sub(r'["#]', " ", text).split()).lower()


@pytest.mark.parametrize("path", TEXTS)
def test_no_text_calls_tuning_on_the_control_privacy_free(path: str) -> None:
    text = words(path)
    for claim in ("privacy-free", "costs no privacy", "no privacy cost"):
        assert claim not in text, f"{path} says {claim!r}"


def test_the_privacy_doc_says_why_and_where_to_tune_instead() -> None:
    text = words("docs/PRIVACY.md")
    section = text[text.index("tuning costs privacy that ε does not include"):]
    section = section[:section.index("byzantine-robust aggregation is post-processing")]
    assert "--tune-on control" in section and "same private rows" in section
    assert "public data" in section and "synthetic data" in section
