"""Our tokenizer against open_clip's on 1,000 seeded captions: identical ids, SOT first, exactly one
EOT (last when truncated), zero padding after it."""

from __future__ import annotations

import random

import pytest
import torch

from compress.compat import open_clip
from compress.tokenizer import EOT_ID, SOT_ID, Tokenizer

WORDS = [
    "a",
    "photo",
    "of",
    "the",
    "red",
    "green",
    "blue",
    "yellow",
    "circle",
    "square",
    "triangle",
    "star",
    "cat",
    "dog",
    "on",
    "in",
    "with",
    "two",
    "three",
    "small",
    "large",
    "striped",
    "dotted",
    "bright",
    "dark",
    "background",
    "picture",
    "image",
]
PUNCTUATION = list(".,;:!?-'\"()[]/") + ["...", "--", "!!", "?!"]
ENTITIES = [
    "&amp;",
    "&lt;",
    "&gt;",
    "&quot;",
    "&#39;",
    "&nbsp;",
    "&amp;amp;",
    "&eacute;",
    "&#x263A;",
]
UNICODE = [
    "café",
    "naïve",
    "Crème brûlée",
    "Ångström",
    "São Paulo",
    "Zürich",
    "façade",
    "niño",
    "Ελλάδα",
    "Москва",
    "東京",
    "😀",
    "🐱‍👤",
    "cafe\u0301",
    "ﬁsh",
    "Ⅻ",
    "straße",
    "İstanbul",
    "âêîôû",
]
WHITESPACE = ["  ", "\t", "\n", "   \n\t ", "\u00a0", "\u3000"]


def _word(rng: random.Random) -> str:
    word = rng.choice(WORDS)
    kind = rng.random()
    if kind < 0.1:
        word = word.upper()
    elif kind < 0.2:
        word = word.capitalize()
    elif kind < 0.3:
        word = str(rng.randrange(0, 10 ** rng.randint(1, 7)))
    elif kind < 0.37:
        word = rng.choice(UNICODE)
    elif kind < 0.42:
        word = rng.choice(ENTITIES)
    elif kind < 0.45:
        word = f"{word}{rng.randint(0, 99)}"  # digits glued to letters
    if rng.random() < 0.15:
        word += rng.choice(PUNCTUATION)
    return word


def _sep(rng: random.Random) -> str:
    return rng.choice(WHITESPACE) if rng.random() < 0.1 else " "


def captions(n: int = 1000, seed: int = 0) -> list[str]:
    """Seeded captions: fixed edge cases, then short, medium and far-too-long ones."""
    rng = random.Random(seed)
    fixed = [
        "",
        " ",
        "\n\t",
        ".",
        "&amp;",
        "A",
        "a " * 13 + "a",  # 14 one-token words
        "a " * 14 + "a",
        "a " * 15 + "a",  # 15 and 16 words: around the short context's limit
        "a " * 74 + "a",
        "a " * 75 + "a",
        "a " * 200,  # around the 77 limit and far beyond
        "HELLO WORLD",
        "Tom &amp; Jerry",
        "3.14159 and 2,718",
        "  padded   caption  ",
        "<b>bold</b> &lt;tag&gt;",
        "e\u0301clair",
        "ÉCLAIR",
        "don't won't it's",
        "x" * 400,
    ]
    out = list(fixed)
    while len(out) < n:
        kind = rng.random()
        if kind < 0.4:
            length = rng.randint(1, 6)  # short
        elif kind < 0.7:
            length = rng.randint(7, 30)  # longer than the short context, within 77
        else:
            length = rng.randint(60, 200)  # much longer than 77 tokens
        text = "".join(_word(rng) + _sep(rng) for _ in range(length))
        if rng.random() < 0.2:
            text = rng.choice(WHITESPACE) + text + rng.choice(WHITESPACE)
        out.append(text)
    return out[:n]


CAPTIONS = captions()


@pytest.fixture(scope="module")
def oc():
    return open_clip()


def test_captions_cover_the_intended_cases():
    assert len(CAPTIONS) == 1000 and len(set(CAPTIONS)) > 950
    assert "" in CAPTIONS
    assert sum("&amp;" in c for c in CAPTIONS) >= 20
    assert sum(any(ch.isupper() for ch in c) for c in CAPTIONS) >= 200
    assert sum(any(ch.isdigit() for ch in c) for c in CAPTIONS) >= 200
    assert sum(any(ord(ch) > 127 for ch in c) for c in CAPTIONS) >= 100
    assert sum("  " in c or "\t" in c or "\n" in c for c in CAPTIONS) >= 100
    assert sum(len(c.split()) > 100 for c in CAPTIONS) >= 100


@pytest.mark.parametrize("context_length", [77, 16])
def test_ids_equal_open_clip(oc, context_length):
    ours = Tokenizer(context_length)(CAPTIONS)
    reference = oc.tokenize(CAPTIONS, context_length=context_length)
    assert ours.dtype == torch.long and ours.shape == (len(CAPTIONS), context_length)
    bad = (ours != reference).any(dim=1).nonzero().flatten().tolist()
    assert not bad, (
        f"{len(bad)} captions differ; first {CAPTIONS[bad[0]]!r}:\n"
        f"ours       {ours[bad[0]].tolist()}\nopen_clip  {reference[bad[0]].tolist()}"
    )


def test_ids_equal_the_models_own_open_clip_tokenizer(oc):
    reference = oc.get_tokenizer("ViT-B-32")
    assert reference.context_length == 77
    torch.testing.assert_close(Tokenizer(77)(CAPTIONS), reference(CAPTIONS), rtol=0, atol=0)


@pytest.mark.parametrize("context_length", [77, 16])
def test_sot_eot_and_padding(oc, context_length):
    tokens = Tokenizer(context_length)(CAPTIONS)
    assert (tokens[:, 0] == SOT_ID).all()
    eot = tokens == EOT_ID
    assert (eot.sum(dim=1) == 1).all(), "every row holds exactly one EOT"
    eot_pos = eot.int().argmax(dim=1)
    positions = torch.arange(context_length).expand_as(tokens)
    assert (tokens[positions > eot_pos[:, None]] == 0).all(), "zero padding after EOT"
    assert (tokens[(positions > 0) & (positions < eot_pos[:, None])] != 0).all(), "no 0 before EOT"
    assert not (tokens[(positions > 0) & (positions < eot_pos[:, None])] == SOT_ID).any()
    # truncation: a caption whose BPE tokens (+ SOT/EOT) overflow ends in EOT at the last slot
    lengths = torch.tensor([len(oc.tokenizer._tokenizer.encode(c)) + 2 for c in CAPTIONS])
    truncated = lengths > context_length
    assert truncated.sum() >= 100
    assert (eot_pos[truncated] == context_length - 1).all()
    assert (eot_pos[~truncated] == lengths[~truncated] - 1).all()
    empty = tokens[CAPTIONS.index("")]
    assert empty[:2].tolist() == [SOT_ID, EOT_ID] and not empty[2:].any()


def test_context_length_boundaries():
    """'a' is one BPE token: n words need n + 2 slots."""
    short = Tokenizer(16)
    fits = short("a " * 13 + "a")  # 14 words + SOT + EOT = 16: not truncated
    assert fits.shape == (16,) and fits[-1] == EOT_ID and (fits[1:-1] != EOT_ID).all()
    over = short("a " * 14 + "a")  # 17 slots: truncated, the last word makes way for EOT
    assert torch.equal(over, fits)
    under = short("a " * 12 + "a")
    assert under[-2] == EOT_ID and under[-1] == 0


def test_single_string_batches_caching_and_independent_instances():
    tok16, tok77 = Tokenizer(16), Tokenizer(77)
    batch = tok16(CAPTIONS[:50])
    for i, caption in enumerate(CAPTIONS[:50]):
        one = tok16(caption)
        assert one.shape == (16,) and torch.equal(one, batch[i])
    one = tok16(CAPTIONS[30])
    one.fill_(7)  # the returned tensor is a copy: the cache is not corrupted
    assert torch.equal(tok16(CAPTIONS[30]), batch[30])
    again = tok16(CAPTIONS[:50])
    again[:] = 5
    assert torch.equal(tok16(CAPTIONS[:50]), batch)
    long_caption = "a " * 100
    assert tok16(long_caption).shape == (16,) and tok77(long_caption).shape == (77,)
    assert tok77(long_caption)[76] == EOT_ID and tok16(long_caption)[15] == EOT_ID
