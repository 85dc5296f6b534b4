"""The CLIP byte-pair-encoding tokenizer: open_clip's ids, encoded by the `tokenizers` library
(open_clip ships the vocabulary, so it works offline)."""

from __future__ import annotations

import functools
import gzip
import importlib.util
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from compress.io import sha256_file

# Ids of the start/end-of-text tokens in the BPE vocabulary; models use EOT to find the pooled token.
SOT_ID = 49406
EOT_ID = 49407
VOCAB_SIZE = 49408
CACHE_SIZE = 1 << 20  # captions (and, per merges file, caption chunks and words) remembered
SPECIAL_TOKENS = ("<start_of_text>", "<end_of_text>")
# open_clip's pre-tokenization (SimpleTokenizer.pat, with the same flags): its special tokens,
# English contractions, runs of letters, single digits, runs of other non-space characters.
PATTERN = (
    "|".join(SPECIAL_TOKENS) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
)

# Text that open_clip's cleaning (ftfy.fix_text, html.unescape twice, strip) returns unchanged:
# printable ASCII, tabs and newlines, no '&'. Each of ftfy 6's fixes needs something else:
# HTML entities need '&' (html.unescape too); mojibake repair returns ASCII text as it is;
# C1 controls, ligatures, full/half-width forms, curly quotes, surrogates are not ASCII; line
# breaks need '\r' (or U+0085, U+2028, U+2029); terminal escapes need ESC; the control
# characters it removes are the other ASCII controls (tab and newline stay); NFC keeps ASCII.
# ftfy is most of open_clip's cost a caption (~40 µs), so such text skips it.
_NOT_PLAIN = re.compile(r"[^\t\n\x20-\x25\x27-\x7e]").search


@functools.cache
def default_vocab() -> Path:
    """open_clip's merges file (its ``tokenizer.default_bpe()``), found without importing
    open_clip, which takes seconds and which text made only of plain ASCII never needs."""
    return (
        Path(importlib.util.find_spec("open_clip").origin).parent / "bpe_simple_vocab_16e6.txt.gz"
    )


def byte_chars() -> list[str]:
    """GPT-2's byte-level alphabet in CLIP's vocabulary order: byte b → a printable character
    (printable Latin-1 bytes stand for themselves, the others for 256, 257, …)."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    moved = [b for b in range(256) if b not in kept]
    chars = dict(zip(kept, map(chr, kept), strict=True))
    chars.update(zip(moved, map(chr, range(256, 256 + len(moved))), strict=True))
    return [chars[b] for b in [*kept, *moved]]


def read_vocab(path: str | Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's vocabulary and merges from a merges file, as open_clip's SimpleTokenizer builds
    them: the 256 byte characters, the same with the end-of-word suffix, one token per merge
    (its first 48,894 lines after the header), the two special tokens."""
    with gzip.open(path) as file:
        lines = file.read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(line.split()) for line in lines]
    base = byte_chars()
    tokens = [*base, *(c + "</w>" for c in base), *("".join(m) for m in merges), *SPECIAL_TOKENS]
    return dict(zip(tokens, range(len(tokens)), strict=True)), merges


def plain(text: str) -> bool:
    """Whether open_clip's ftfy and HTML unescaping would leave ``text`` as it is (above)."""
    # the string methods first: quicker than the pattern, which only tabs and newlines need
    return text.isascii() and "&" not in text and (text.isprintable() or not _NOT_PLAIN(text))


def clean(text: str) -> str:
    """open_clip's ``lower`` cleaning: ftfy, HTML entities, whitespace runs → one space, lower case."""
    if plain(text):
        return " ".join(text.split()).lower()
    from compress.compat import open_clip

    return open_clip().tokenizer.get_clean_fn("lower")(text)


class ClipBpe:
    """CLIP's BPE for one merges file: ``encode`` gives exactly open_clip's
    ``SimpleTokenizer.encode`` ids, ~20x faster.

    A cleaned text is split at its spaces into chunks (no pre-token spans a space), and each
    chunk's ids are remembered: captions reuse few words, so most texts cost a cleaning and a
    dictionary look-up per word. A new chunk is pre-tokenized by open_clip's pattern (the same
    `regex` pattern and flags) and its new words byte-pair encoded by the `tokenizers` library
    (byte-level alphabet, ``</w>`` suffix, the file's merges), all of a batch's in one call. A
    text holding a special token's name is left to open_clip's own encoder.
    """

    def __init__(self, path: str | Path) -> None:
        import regex
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import models, pre_tokenizers

        self.path = Path(path)
        vocab, merges = read_vocab(self.path)
        self.words = HFTokenizer(models.BPE(vocab, merges, end_of_word_suffix="</w>"))
        self.words.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        self.pattern = regex.compile(PATTERN, regex.IGNORECASE)
        self._special = regex.compile("|".join(SPECIAL_TOKENS), regex.IGNORECASE).fullmatch
        self._chunks: dict[str, list[int] | None] = {}  # None: holds a special token
        self._words: dict[str, list[int]] = {}
        self._reference = None

    @property
    def reference(self):
        """open_clip's SimpleTokenizer of this merges file, for the texts this leaves to it."""
        if self._reference is None:
            from compress.compat import open_clip

            self._reference = open_clip().tokenizer.SimpleTokenizer(str(self.path))
        return self._reference

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's BPE ids, without the start/end tokens (open_clip's ``encode``)."""
        split = [
            t.lower().split() if plain(t) else clean(t).split(" ")  # plain: the same, quicker
            for t in texts
        ]
        chunks = self._chunks
        if len(chunks) >= CACHE_SIZE:  # now, not between looking chunks up and reading them
            chunks.clear()
        out: list[list[int] | None] = []
        missed = []
        for i, parts in enumerate(split):
            ids = []
            for chunk in parts:
                got = chunks.get(chunk)
                if got is None:  # a new chunk, or a special token's
                    out.append(None)
                    missed.append(i)
                    break
                ids += got
            else:
                out.append(ids)
        if missed:
            self._learn({c for i in missed for c in split[i] if c not in chunks})
            for i in missed:
                parts = [chunks[c] for c in split[i]]
                if any(p is None for p in parts):
                    out[i] = self.reference.encode(texts[i])
                else:
                    out[i] = [t for p in parts for t in p]
        return out

    def _learn(self, chunks: set[str]) -> None:
        """Encode new chunks: pre-tokenize them, byte-pair encode their new words in one call."""
        words = {c: self.pattern.findall(c) for c in chunks}
        known = self._words
        new = list({w: None for ws in words.values() for w in ws if w not in known})
        if len(known) + len(new) > CACHE_SIZE:
            known.clear()
            new = list({w: None for ws in words.values() for w in ws})
        if new:
            # one sequence of pre-split words: the encoding says which word each id is from
            encoding = self.words.encode(new, is_pretokenized=True, add_special_tokens=False)
            ids: list[list[int]] = [[] for _ in new]
            for token, word in zip(encoding.ids, encoding.word_ids, strict=True):
                ids[word].append(token)
            known.update(zip(new, ids, strict=True))
        for chunk, ws in words.items():
            special = any(w[0] == "<" and self._special(w) for w in ws)
            self._chunks[chunk] = None if special else [t for w in ws for t in known[w]]


@functools.cache
def _load_bpe(vocab_path: str) -> ClipBpe:
    """The BPE of a merges file, built once per process: reading and indexing the merges takes
    ~0.2 s, and code that tokenizes batch by batch makes a Tokenizer per batch."""
    return ClipBpe(vocab_path)


class Tokenizer:
    """Text → int64 token ids of a fixed context length (padded with 0, truncated to end in EOT),
    exactly open_clip's ``SimpleTokenizer`` ids.

    Example:
        >>> tokenize = Tokenizer(context_length=32)
        >>> tokenize(["a red circle"]).shape
        torch.Size([1, 32])
    """

    def __init__(self, context_length: int = 77, vocab: str | Path | None = None) -> None:
        self.context_length = context_length
        self.vocab = vocab  # a BPE merges file (an export's shipped copy); open_clip's by default
        self._bpe: ClipBpe | None = None
        # captions seen before (epochs) → their ids, SOT to EOT, cut to the context length
        self._cache: dict[str, list[int]] = {}

    @property
    def bpe(self) -> ClipBpe:
        if self._bpe is None:  # load on first use
            self._bpe = _load_bpe(str(self.vocab_path))
        return self._bpe

    @property
    def vocab_path(self) -> Path:
        """The BPE merges file, shipped beside exported text towers."""
        return Path(self.vocab or default_vocab())

    def _remember(self, texts: Sequence[str]) -> None:
        """Encode texts not seen before, and remember each one's ids: SOT, its BPE ids, EOT, cut
        to the context length with EOT kept last (open_clip's truncation)."""
        for text, ids in zip(texts, self.bpe.encode(texts), strict=True):
            ids = [SOT_ID, *ids, EOT_ID]
            if len(ids) > self.context_length:
                ids = ids[: self.context_length]
                ids[-1] = EOT_ID
            self._cache[text] = ids

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        cache, pad = self._cache, [0] * self.context_length
        if len(cache) >= CACHE_SIZE:  # now, not between encoding texts and reading them
            cache.clear()
        if isinstance(texts, str):  # datasets tokenize one caption a call: keep it short
            if texts not in cache:
                self._remember([texts])
            ids = cache[texts]
            return torch.from_numpy(np.array(ids + pad[len(ids) :], np.int64))
        new = [t for t in texts if t not in cache]
        if new:
            self._remember(list(dict.fromkeys(new)))
        tokens = np.zeros((len(texts), self.context_length), np.int64)  # (B, context_length)
        for row, text in zip(tokens, texts, strict=True):  # fresh: callers may write into it
            ids = cache[text]
            row[: len(ids)] = ids
        return torch.from_numpy(tokens)

    def __getstate__(self) -> dict:  # DataLoader workers rebuild the BPE and the cache themselves
        return {
            "context_length": self.context_length,
            "vocab": self.vocab,
            "_bpe": None,
            "_cache": {},
        }


TOKENIZER_FILE = "tokenizer.json"  # a Hugging Face tokenizer's whole definition, one file
CLEANING = ("whitespace", "lower", "canonicalize")  # open_clip's text cleaning before encoding


class TokenizerFileError(ValueError):
    """A tokenizer file that cannot be read, or lacks what encoding needs (its pad token)."""


class FileTokenizer:
    """Text → int64 token ids by a Hugging Face tokenizer file (``tokenizer.json``), as open_clip
    tokenizes for SigLIP's and SigLIP2's SentencePiece models through transformers: open_clip's
    cleaning (SigLIP's ``canonicalize``: punctuation dropped, lower case), the file's encoding
    with its special tokens (e.g. an end-of-sequence token), cut to ``context_length`` and
    padded to it with the file's pad token. The pad token is the file's own padding setting, or
    ``pad_token`` in the ``tokenizer_config.json`` or ``special_tokens_map.json`` beside it.

    Args:
        path: the ``tokenizer.json`` file, or the folder that holds it.
        context_length: ids per text.
        clean: ``"whitespace"``, ``"lower"`` or ``"canonicalize"`` (open_clip's names).
    """

    def __init__(self, path: str | Path, context_length: int, clean: str = "whitespace") -> None:
        from tokenizers import Tokenizer as HFTokenizer

        path = Path(path)
        self.path = path / TOKENIZER_FILE if path.is_dir() else path
        if not self.path.is_file():
            raise TokenizerFileError(f"{path}: no {TOKENIZER_FILE} there")
        if clean not in CLEANING:
            raise TokenizerFileError(f"unknown cleaning {clean!r}; expected one of {CLEANING}")
        try:
            self.encoder = HFTokenizer.from_file(str(self.path))
        except Exception as err:  # the library's own parse errors name no file
            raise TokenizerFileError(f"{self.path}: not a tokenizer file ({err})") from None
        self.context_length, self.clean = context_length, clean
        pad = _pad_token(self.path, self.encoder)
        self.pad_id = self.encoder.token_to_id(pad)
        if self.pad_id is None:
            raise TokenizerFileError(f"{self.path}: its pad token {pad!r} is not in its vocabulary")
        self.encoder.enable_truncation(max_length=context_length)
        self.encoder.enable_padding(length=context_length, pad_id=self.pad_id, pad_token=pad)

    @property
    def vocab_size(self) -> int:
        return self.encoder.get_vocab_size()

    def spec(self) -> dict:
        """What identifies this tokenizer in a model's record: the file (and its sha256), the
        cleaning; :func:`tokenizer_from_spec` reopens it."""
        return {
            "kind": "hf_tokenizer",
            "file": str(self.path),
            "sha256": sha256_file(self.path),
            "clean": self.clean,
        }

    def __call__(self, texts: str | list[str]) -> torch.Tensor:
        from compress.compat import open_clip

        single = isinstance(texts, str)
        clean = open_clip().tokenizer.get_clean_fn(self.clean)
        encodings = self.encoder.encode_batch([clean(t) for t in ([texts] if single else texts)])
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)  # (B, context_length)
        return ids[0] if single else ids


def _pad_token(path: Path, encoder) -> str:
    """The pad token of a tokenizer file: its own padding setting, else the configs beside it."""
    import json

    padding = encoder.padding
    if padding and padding.get("pad_token"):
        return padding["pad_token"]
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        config = path.parent / name
        if config.is_file():
            pad = json.loads(config.read_text()).get("pad_token")
            if isinstance(pad, dict):  # {"content": "<pad>", ...}
                pad = pad.get("content")
            if pad:
                return pad
    raise TokenizerFileError(
        f"{path}: no pad token (neither the file's padding setting nor a tokenizer_config.json or "
        "special_tokens_map.json beside it names one)"
    )


def tokenizer_from_spec(spec: dict, context_length: int) -> FileTokenizer:
    """The tokenizer a model's record names (:meth:`FileTokenizer.spec`), refused where the file
    is no longer the one the model was made with."""
    if spec.get("kind") != "hf_tokenizer":
        raise TokenizerFileError(
            f"unknown tokenizer kind {spec.get('kind')!r}; expected hf_tokenizer"
        )
    path = Path(spec["file"])
    if not path.is_file():
        raise TokenizerFileError(f"{path}: the model's tokenizer file is missing")
    if sha256_file(path) != spec["sha256"]:
        raise TokenizerFileError(
            f"{path}: changed since the model was made (sha256 {spec['sha256'][:12]}… expected); "
            "the model reads the tokenizer it was made with"
        )
    return FileTokenizer(path, context_length, spec["clean"])
