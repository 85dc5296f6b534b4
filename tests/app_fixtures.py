"""Fixtures for the apps' core libraries: a fresh tiny export with its golden files, and 1,000
captions with open_clip's token ids.

The JVM core's tests (``android_demo/core``) and the Swift core's (``ios_demo/EdgeClipCore``)
read them from one folder:

    python -m tests.app_fixtures /tmp/edgeclip-fixtures
    mvn -f android_demo/core/pom.xml test -Dedgeclip.fixtures=/tmp/edgeclip-fixtures
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from compress.data import scenes
from compress.io import write_json
from compress.models import ModelRecord
from compress.tokenizer import Tokenizer

EXPORT_DIR = "export"
CAPTIONS_FILE = "captions.json"
CAPTIONS = 1000
SCENE_CAPTIONS = 700  # the rest are the multilingual / punctuation set
CONTEXT_LENGTH = 77  # open_clip's: long enough that BPE, not truncation, decides the ids

# Pieces of the multilingual / punctuation set, joined at random. They cover what the apps'
# tokenizer reimplements (see EDGE_CAPTIONS in export/golden.py); none is mojibake, which
# ftfy repairs and the apps do not (a phone's keyboard does not type it).
# fmt: off
FRAGMENTS = (
    # Latin with diacritics, composed and decomposed (NFC joins them), full lowercase mapping
    "caf\u00e9", "cafe\u0301", "na\u00efve", "\u00c9COLE", "Stra\u00dfe", "\u0130stanbul",
    "\u0131\u015f\u0131k", "\u00c5ngstr\u00f6m", "se\u00f1or", "\u0141\u00f3d\u017a", "\u0153uvre",
    "\u00c6sir", "\u00fe\u00f0",
    # Greek (final sigma), Cyrillic, Armenian, Georgian
    "\u039f\u0394\u03a5\u03a3\u03a3\u0395\u03a5\u03a3", "\u03ba\u03cc\u03c3\u03bc\u03bf\u03c2",
    "\u041f\u0440\u0438\u0432\u0435\u0442", "\u0451\u0436\u0438\u043a", "\u0562\u0561\u0580\u0587",
    "\u10d2\u10d0\u10db\u10d0\u10e0\u10ef\u10dd\u10d1\u10d0",
    # right-to-left and combining-mark scripts
    "\u0645\u0631\u062d\u0628\u0627", "\u0642\u0650\u0637\u0651\u0629", "\u05e9\u05dc\u05d5\u05dd",
    "\u0928\u092e\u0938\u094d\u0924\u0947", "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35",
    # CJK, kana, Hangul
    "\u732b", "\u65e5\u672c\u8a9e", "\u3072\u3089\u304c\u306a", "\u30ab\u30bf\u30ab\u30ca",
    "\ud55c\uad6d\uc5b4", "\u6f22\u5b57\u3068\u304b\u306a",
    # emoji: single, ZWJ sequences, skin tones, variation selectors, flags
    "\U0001f408", "\U0001f408\u200d\u2b1b", "\U0001f44d\U0001f3fd", "\u2764\ufe0f",
    "\U0001f1ef\U0001f1f5", "\U0001f468\u200d\U0001f469\u200d\U0001f467",
    # punctuation: runs, curly quotes and apostrophes, dashes, ellipsis, brackets, symbols
    "!!!", "?!", "...", "\u2026", "\u2014", "\u2013", "--", "\u201cquoted\u201d",
    "\u2018single\u2019", "dog\u2019s", "it's", "we'd've", "(a)", "[b]", "{c}", "#tag", "@user",
    "50%", "$9.99", "\u20ac5", "\u00a3", "\u00a9", "\u00ae", "\u2122", "\u00b0C", "a/b\\c",
    "x*y=z", "~", "_under_", "<tag>", "e-mail", "\u00bfqu\u00e9?", "\u00a1s\u00ed!",
    # HTML entities (named, numeric, double-escaped)
    "&amp;", "&lt;3", "&gt;", "&quot;hi&quot;", "&#39;", "&#x263A;", "&amp;amp;", "&eacute;",
    "&nbsp;",
    # ftfy's fixes: ligatures, full width, odd spaces and breaks
    "\ufb01sh", "\ufb02ow", "\uff26\uff55\uff4c\uff4c", "\uff11\uff12\uff13", "\u3000", "\u00a0",
    "\t", "\n", "\r\n", "\u2028",
    # digits and numbers
    "0", "42", "3.14159", "1,000,000", "2026-12-04", "\u0661\u0662\u0663", "\u00bd",
    # mixed case words and the special-token names
    "A", "LARGE", "Red", "cIrClE", "<start_of_text>", "<end_of_text>",
)
# fmt: on


def multilingual_captions(count: int, seed: int = 0) -> list[str]:
    """``count`` seeded captions of 1–12 fragments, some lead or trail with spaces."""
    rng = np.random.default_rng(seed)
    captions = []
    for _ in range(count):
        pieces = rng.choice(len(FRAGMENTS), size=int(rng.integers(1, 13)))
        glue = rng.choice([" ", "", "  ", ", "], size=len(pieces))
        text = "".join(FRAGMENTS[i] + str(g) for i, g in zip(pieces, glue, strict=True))
        captions.append(text if rng.random() < 0.8 else f"  {text}\t")
    return captions


def scene_captions(count: int, seed: int = 0) -> list[str]:
    """Captions and paraphrases of the scenes training split, as the demo trains on them."""
    captions: list[str] = []
    index = 0
    while len(captions) < count:
        scene, _ = scenes.make_scene("train", index, seed)
        captions += [scenes.caption(scene), *scenes.paraphrases(scene)[:1]]
        index += 1
    return captions[:count]


def make_app_fixtures(out: str | Path) -> Path:
    """A tiny random-init model exported to ONNX fp32 (with its golden files) in
    ``out/export``, and ``out/captions.json``: 1,000 captions with their ids. Returns ``out``."""
    from export.driver import export_model  # the exporters load lazily

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    record = ModelRecord.named("tiny")
    model = record.build()
    size, context = record.image_size, record.context_length
    export_model(
        model,
        record,
        out / EXPORT_DIR,
        target="onnx",
        sample_images=torch.rand(4, 3, size, size),
        sample_tokens=Tokenizer(context)(["a red circle", "two blue squares"]),
    )
    texts = scene_captions(SCENE_CAPTIONS) + multilingual_captions(CAPTIONS - SCENE_CAPTIONS)
    ids = Tokenizer(CONTEXT_LENGTH)(texts).tolist()
    write_json(
        out / CAPTIONS_FILE,
        {
            "context_length": CONTEXT_LENGTH,
            "captions": [{"text": t, "ids": row} for t, row in zip(texts, ids, strict=True)],
        },
    )
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.app_fixtures OUT_DIR")
    print(json.dumps({"fixtures": str(make_app_fixtures(sys.argv[1]))}))
