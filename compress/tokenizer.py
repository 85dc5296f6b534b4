"""The CLIP byte-pair-encoding tokenizer, from open_clip (it ships its vocabulary, so it works offline)."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

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
