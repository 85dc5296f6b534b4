"""Our tokenizer against open_clip's: identical ids on 1,000 seeded captions (SOT first, exactly
one EOT, last when truncated, zero padding after it), on the scenes data's captions, on
adversarial and random text, and from a shipped copy of the merges file."""

from __future__ import annotations

import functools
import pickle
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from compress import tokenizer
from compress.compat import open_clip
from compress.data import scenes
from compress.tokenizer import (
    EOT_ID,
    SOT_ID,
    VOCAB_SIZE,
    ClipBpe,
    Tokenizer,
    byte_chars,
    clean,
    default_vocab,
    plain,
    read_vocab,
)

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


# ---------------------------------------------------------------------------------------------
# The fast encoder (ClipBpe) against open_clip's SimpleTokenizer, input by input


@functools.cache
def scenes_captions(n: int = 2500) -> list[str]:
    """The distinct captions and paraphrases of ``n`` scenes from every split (the demo's text)."""
    out = []
    for split in scenes.SPLITS:
        for i in range(n // len(scenes.SPLITS)):
            scene, _ = scenes.make_scene(split, i, seed=0)
            out += [scenes.caption(scene), *scenes.paraphrases(scene)]
    return list(dict.fromkeys(out))


SPECIALS = [
    "<start_of_text>",
    "a <END_OF_TEXT> b",
    "x<end_of_text>y",
    "<<start_of_text>>",
    "<\u017ftart_of_text>",  # long s: the case-insensitive pattern takes it for an s
    "&lt;start_of_text&gt;",
]
ADVERSARIAL = [
    *SPECIALS,
    "",
    " ",
    "   leading and trailing   ",
    "\ttabs\tand\nnewlines\n",
    "\r\nwindows\rline breaks",
    "form\x0cfeed\x0bvertical\x1cfile separator\x1fend",
    "nul\x00bell\x07escape\x1b[31mred\x1b[0m del\x7f",
    "MiXeD CaSe WoRdS",
    "it's, don't, they're, we've, I'm, you'll, he'd",
    "IT'S DON'T THEY'RE WE'VE I'M YOU'LL HE'D",
    "''s 's' s's 'ss 'S 'ſ 'K \u212a'd",
    "'",
    "''''",
    "0123456789 3.14159 1,000,000 007 2nd 3rd 10x",
    "!!! ??? ... --- ,,, ;;; ::: ((( ))) [[[ ]]] {{{ }}} *** /// \\\\\\ ~~~ ^^^ ``` |||",
    "a!b?c.d,e;f:g-h_i(j)k[l]m{n}o<p>q@r#s$t%u^v*w+x=y|z~",
    "Tom &amp; Jerry",
    "&amp;amp; &lt;b&gt; &quot;quoted&quot; &#39;single&#39; &#x263A; &nbsp;x &eacute;",
    "&#9;tab&#10;newline &#28;fs &#0;nul &#128512;",
    "& alone, &; &&& &amp",
    "<b>bold</b> &lt;tag&gt;",
    "café naïve crème brûlée Ångström São Zürich façade niño",
    "cafe\u0301 e\u0301clair ÉCLAIR",
    "straße STRASSE İstanbul ß ſ ﬁsh ﬂ Ⅻ ⅻ ½ ²",
    "Ελλάδα Москва العربية עברית हिन्दी ไทย",
    "東京 北京市 日本語のテキスト 한국어 中文字符",
    "😀 🐱‍👤 👍🏽 🇫🇷 ❤️ ✔",
    "ＬＯＵＤ\u3000ＮＯＩＳＥＳ",
    "\u201ccurly\u201d \u2018quotes\u2019",
    "sÃ³ voilÃ le travail âœ” mojibake",
    "\u00a0nbsp\u2028line\u2029para\u0085nel\u200bzwsp\ufeffbom",
    "\u0345 combining ypogegrammeni, \u0301 lone accent",
    "\ud83d\ude00 paired surrogates, \ud800 lone one",
    "a" * 300,
    "word " * 100,
    "antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
]


def random_texts(n: int, seed: int) -> list[str]:
    """Seeded random strings: printable ASCII (the quick cleaning's), all of ASCII, Latin-1,
    the whole BMP (surrogates too) and the planes above, mixed with spaces and apostrophes."""
    rng = random.Random(seed)
    pools = [
        [chr(c) for c in range(0x20, 0x7F)] + ["\t", "\n"],
        [chr(c) for c in range(0x80)],
        [chr(c) for c in range(0x100)],
        None,  # any code point
    ]
    out = []
    for _ in range(n):
        pool = rng.choice(pools)
        chars = []
        for _ in range(rng.randint(0, 40)):
            r = rng.random()
            if r < 0.15:
                chars.append(" ")
            elif r < 0.2:
                chars.append(rng.choice(["'s", "'t", "'re", "'", "&amp;", "<end_of_text>"]))
            elif pool is None:
                chars.append(chr(rng.choice([rng.randrange(0x80, 0x800), rng.randrange(0x110000)])))
            else:
                chars.append(rng.choice(pool))
        out.append("".join(chars))
    return out


@pytest.fixture(scope="module")
def reference(oc):
    return oc.tokenizer.SimpleTokenizer()


def assert_same_ids(texts, ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.dtype == torch.long and ours.shape == theirs.shape
    bad = (ours != theirs).any(dim=1).nonzero().flatten().tolist()
    assert not bad, (
        f"{len(bad)} of {len(texts)} texts differ; first {texts[bad[0]]!r}:\n"
        f"ours       {ours[bad[0]].tolist()}\nopen_clip  {theirs[bad[0]].tolist()}"
    )


def test_the_encoder_is_built_as_open_clip_builds_its_own(oc, reference):
    assert default_vocab() == Path(oc.tokenizer.default_bpe())
    assert byte_chars() == list(oc.tokenizer.bytes_to_unicode().values())
    vocab, merges = read_vocab(default_vocab())
    assert vocab == reference.encoder and len(vocab) == VOCAB_SIZE
    assert merges == sorted(reference.bpe_ranks, key=reference.bpe_ranks.get)
    bpe = ClipBpe(default_vocab())
    assert bpe.pattern.pattern == reference.pat.pattern and bpe.pattern.flags == reference.pat.flags


def test_cleaning_is_open_clips(oc):
    """Plain text (the quick cleaning's) is what ftfy and HTML unescaping leave as it is."""
    texts = random_texts(3000, seed=1) + ADVERSARIAL
    quick = [t for t in texts if plain(t)]
    assert len(quick) >= 500 and any("\t" in t or "\n" in t for t in quick)
    for text in quick:
        assert oc.tokenizer.basic_clean(text) == text.strip(), repr(text)
    lower = oc.tokenizer.get_clean_fn("lower")
    assert [clean(t) for t in texts] == [lower(t) for t in texts]


@pytest.mark.parametrize("context_length", [77, 24])
def test_ids_equal_open_clip_on_scenes_captions(reference, context_length):
    texts = scenes_captions()
    assert len(texts) > 3500
    ours = Tokenizer(context_length)(texts)
    assert_same_ids(texts, ours, reference(texts, context_length=context_length))


@pytest.mark.parametrize("context_length", [77, 16])
def test_ids_equal_open_clip_on_adversarial_text(reference, context_length):
    ours = Tokenizer(context_length)(ADVERSARIAL)
    assert_same_ids(ADVERSARIAL, ours, reference(ADVERSARIAL, context_length=context_length))
    one_by_one = torch.stack([Tokenizer(context_length)(t) for t in ADVERSARIAL])
    assert torch.equal(one_by_one, ours)


def test_ids_equal_open_clip_on_random_unicode(reference):
    texts = random_texts(3000, seed=0)
    assert sum(t.isascii() for t in texts) > 1000 and sum(not t.isascii() for t in texts) > 1000
    assert_same_ids(texts, Tokenizer(77)(texts), reference(texts))


def test_only_special_token_names_go_to_open_clip(reference):
    """The encoder's own path does the work: open_clip's encoder stays unbuilt until a text
    names a special token, and then encodes that text alone."""
    bpe = ClipBpe(default_vocab())
    texts = [t for t in ADVERSARIAL + random_texts(500, seed=2) if "_of_text" not in t.lower()]
    texts += scenes_captions(200)
    assert bpe.encode(texts) == [reference.encode(t) for t in texts]
    assert bpe._reference is None
    assert bpe.encode(SPECIALS) == [reference.encode(t) for t in SPECIALS]
    assert bpe._reference is not None


def test_a_shipped_copy_of_the_merges_file(tmp_path, reference):
    copy = tmp_path / "text" / "vocab.txt.gz"
    copy.parent.mkdir()
    shutil.copy(default_vocab(), copy)
    tokenize = Tokenizer(77, vocab=copy)
    assert tokenize.vocab_path == copy and tokenize.bpe.path == copy
    assert tokenize.bpe is not Tokenizer(77).bpe  # its own encoder, read from the copy
    texts = ADVERSARIAL + scenes_captions(200)
    assert_same_ids(texts, tokenize(texts), reference(texts))


def test_full_caches_start_afresh(monkeypatch, reference):
    """Batches of seen and new texts, while the caption, chunk and word caches fill up."""
    monkeypatch.setattr(tokenizer, "CACHE_SIZE", 8)
    monkeypatch.setattr(tokenizer, "_load_bpe", functools.cache(ClipBpe))  # its own caches
    tokenize = Tokenizer(77)
    texts = scenes_captions(200)[:40] + CAPTIONS[:40]
    rng = random.Random(0)
    for _ in range(30):
        batch = rng.sample(texts, 6)
        assert_same_ids(batch, tokenize(batch), reference(batch))
        assert torch.equal(tokenize(batch[0]), reference(batch[0])[0])
    assert len(tokenize._cache) <= 8 + 6 and len(tokenize.bpe._chunks) <= 8 + 6 * 30


def test_pickled_tokenizers_start_afresh():
    tokenize = Tokenizer(24)
    expected = tokenize(CAPTIONS[:100])
    copy = pickle.loads(pickle.dumps(tokenize))
    assert copy._cache == {} and copy._bpe is None and copy.context_length == 24
    assert torch.equal(copy(CAPTIONS[:100]), expected)
    assert Tokenizer(24)([]).shape == (0, 24)


def test_plain_captions_import_neither_open_clip_nor_ftfy():
    """open_clip's import takes seconds, in every process that tokenizes (DataLoader workers)."""
    code = (
        "import sys; from compress.tokenizer import Tokenizer; "
        "Tokenizer(24)(['a large red circle left of a small blue square', 'it\\'s 2 stars!']); "
        "print(sorted(m for m in sys.modules if m.startswith(('open_clip', 'ftfy'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
