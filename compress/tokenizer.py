"""The CLIP byte-pair-encoding tokenizer, from open_clip (it ships its vocabulary, so it works offline)."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from compress.io import sha256_file

# Ids of the start/end-of-text tokens in the BPE vocabulary; models use EOT to find the pooled token.
SOT_ID = 49406
EOT_ID = 49407
VOCAB_SIZE = 49408
CACHE_SIZE = 1 << 20  # captions remembered (a few hundred MB at most for context 77)


@functools.cache
def _load_bpe(vocab_path: str, context_length: int):
    """open_clip's BPE for a merges file, loaded once per process: reading and indexing the
    merges takes ~0.1 s, and code that tokenizes batch by batch makes a Tokenizer per batch."""
    from compress.compat import open_clip

    bpe = open_clip().tokenizer.SimpleTokenizer(vocab_path, context_length=context_length)
    assert (bpe.sot_token_id, bpe.eot_token_id) == (SOT_ID, EOT_ID)
    return bpe


class Tokenizer:
    """Text → int64 token ids of a fixed context length (padded with 0, truncated to end in EOT).

    Example:
        >>> tokenize = Tokenizer(context_length=32)
        >>> tokenize(["a red circle"]).shape
        torch.Size([1, 32])
    """

    def __init__(self, context_length: int = 77, vocab: str | Path | None = None) -> None:
        self.context_length = context_length
        self.vocab = vocab  # a BPE merges file (an export's shipped copy); open_clip's by default
        self._bpe = None
        self._cache: dict[str, torch.Tensor] = {}

    @property
    def bpe(self):
        if self._bpe is None:  # open_clip imports slowly; load it on first use
            self._bpe = _load_bpe(str(self.vocab_path), self.context_length)
        return self._bpe

    @property
    def vocab_path(self) -> Path:
        """The BPE merges file, shipped beside exported text towers."""
        from compress.compat import open_clip

        return Path(self.vocab or open_clip().tokenizer.default_bpe())

    def _one(self, text: str) -> torch.Tensor:
        # Text cleaning (ftfy, HTML unescaping) costs ~0.5 ms a caption, as much as a training
        # step's compute per sample on a small model: remember captions seen before (epochs).
        tokens = self._cache.get(text)
        if tokens is None:
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            tokens = self._cache[text] = self.bpe([text])[0]
        return tokens

    def __call__(self, texts: str | list[str]) -> torch.Tensor:
        if isinstance(texts, str):
            return self._one(texts).clone()
        return torch.stack([self._one(t) for t in texts])

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
