"""Hard negative captions: a caption with one word swapped for another of its kind (NegCLIP,
Yuksekgonul et al. 2023, "When and why vision-language models behave like bags-of-words").

"a large red circle left of a small blue square" → "a large red star left of a small blue
square": a caption that differs from the true one only in what the model should learn to see.
Contrastive training against such captions teaches what in-batch negatives rarely demand.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PUNCTUATION = ",.;:!?"  # stays on a swapped word ("circle," → "star,")


def swap_word(caption: str, word_sets: Sequence[Sequence[str]], rng: np.random.Generator) -> str:
    """``caption`` with one of its words that belongs to a set replaced by another word of that
    set, both drawn by ``rng``; the caption itself when none of its words is in a set.

    Words are split at spaces and compared without trailing :data:`PUNCTUATION`, which is
    kept. Example:
        >>> swap_word("a red circle, a blue star", [["circle", "star"]], np.random.default_rng(0))
        'a red circle, a blue circle'
    """
    index = {word: i for i, words in enumerate(word_sets) for word in words}
    words = caption.split(" ")
    spots = [i for i, w in enumerate(words) if w.rstrip(PUNCTUATION) in index]
    if not spots:
        return caption
    spot = spots[int(rng.integers(len(spots)))]
    word = words[spot].rstrip(PUNCTUATION)
    others = [w for w in word_sets[index[word]] if w != word]
    words[spot] = others[int(rng.integers(len(others)))] + words[spot][len(word) :]
    return " ".join(words)
