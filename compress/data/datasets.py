"""CSV image–caption data (open_clip style), the errors and decoding every reader shares, and collate."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from compress.data.transforms import ImageTransform
from compress.errors import UserError

Tokenize = Callable[[str], Any]


class Decoded(NamedTuple):
    """A sample read and decoded, before normalisation: what a dataset's cache keeps."""

    pixels: np.ndarray  # uint8 (S, S, 3), resized and cropped
    text: Any  # token ids, or the caption when there is no tokenizer
    caption: str
    label: str | None

    def item(self, transform: ImageTransform, index: int) -> dict[str, Any]:
        """The dataset item: the normalised image tensor, text, caption, index (and label)."""
        item = {
            "image": transform.normalize(self.pixels),
            "text": self.text,
            "caption": self.caption,
            "index": index,
        }
        if self.label is not None:
            item["label"] = self.label
        return item


class DataError(UserError):
    """Malformed data. The message is one line naming the file and the sample, e.g.
    `data/train.csv:14: image 'images/train/train-000012.png' cannot be read: file not found`.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


def reason(err: BaseException) -> str:
    """A short, path-free description of why an image failed to load."""
    if isinstance(err, FileNotFoundError):
        return "file not found"
    if isinstance(err, UnidentifiedImageError):
        return "cannot identify image file"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err) or type(err).__name__


def load_image(src: str | os.PathLike | io.BytesIO) -> Image.Image:
    """Open and fully decode an image, so corrupt data fails here and not in a transform."""
    img = Image.open(src)
    img.load()
    return img


def text_value(tokenize: Tokenize | None, caption: str) -> Any:
    if tokenize is None:
        return caption
    tokens = tokenize(caption)
    # open_clip-style tokenizers return (1, context) for one string; samples carry (context,).
    if isinstance(tokens, torch.Tensor) and tokens.ndim == 2 and tokens.shape[0] == 1:
        tokens = tokens[0]
    return tokens


# Image decoding raises a zoo of types on corrupt bytes (OSError, SyntaxError, ValueError,
# struct.error, EOFError, DecompressionBombError, ...): all of them mean "bad sample".
DECODE_ERRORS = (Exception,)


class CsvDataset(Dataset):
    """Map-style dataset over an open_clip-style CSV (`filepath,caption[,label]`).

    The CSV is read and checked at construction. Image paths are relative to the CSV's folder
    (absolute paths are kept). Each item is
    `{"image": transform(img), "text": tokenize(caption) or caption, "caption": str,
    "index": int}`, plus `"label": str` when `label_key` is set.

    Bad rows (wrong field count, empty image path or label) raise `DataError` naming
    `file:line`; with `skip_bad=True` they are dropped and counted in `skipped`. An image that
    cannot be read raises `DataError` from `__getitem__`; with `skip_bad=True` the item is
    `None` instead, and `collate` drops it and reports the count in the batch's `"skipped"`
    (which works the same with DataLoader workers, as collation happens where the items are).

    Given a `cache` dict, each decoded sample (uint8 pixels at the transform's size, token ids)
    is kept in it when first read, so later epochs skip reading and decoding; the items are the
    same. Datasets of the same CSV, image size and tokenizer may share one dict; each DataLoader
    worker fills its own copy.

    Example:
        >>> ds = CsvDataset("scenes/val.csv", image_transform(64))  # doctest: +SKIP
        >>> ds[0]["caption"]  # doctest: +SKIP
        'a large red circle left of a small blue square'
    """

    def __init__(
        self,
        csv_path: str | os.PathLike,
        transform: ImageTransform,
        tokenize: Tokenize | None = None,
        *,
        image_key: str = "filepath",
        caption_key: str | None = "caption",
        label_key: str | None = None,
        skip_bad: bool = False,
        cache: dict | None = None,
    ) -> None:
        self.csv_path = Path(csv_path)
        self.root = self.csv_path.parent
        self.transform = transform
        self.tokenize = tokenize
        self.label_key = label_key
        self.skip_bad = skip_bad
        self.skipped = 0  # rows dropped at load (skip_bad=True)
        self.cache: dict[int, Decoded] | None = cache
        # (line, image path as written, caption, label or None)
        self._rows: list[tuple[int, str, str, str | None]] = []
        keys = [image_key, caption_key, label_key]  # caption is optional for zero-shot sets
        try:
            with open(self.csv_path, newline="", encoding="utf-8-sig") as f:
                reader = csv.reader(f)
                try:
                    self._read(reader, keys)
                except csv.Error as err:
                    raise DataError(
                        f"{self.csv_path}:{reader.line_num}: malformed CSV: {err}"
                    ) from None
        except FileNotFoundError:
            raise DataError(f"{self.csv_path}: file not found") from None
        except UnicodeDecodeError as err:
            raise DataError(
                f"{self.csv_path}: not UTF-8 text (byte {err.start}: {err.reason})"
            ) from None
        except OSError as err:
            raise DataError(f"{self.csv_path}: cannot be read: {reason(err)}") from None

    def _read(self, reader: Iterator[list[str]], keys: list[str]) -> None:
        header = next(reader, None)
        if header is None:
            raise DataError(
                f"{self.csv_path}: empty file; expected a header with columns {', '.join(k for k in keys if k)}"
            )
        header = [h.strip() for h in header]
        missing = [k for k in keys if k and k not in header]
        if missing:
            raise DataError(
                f"{self.csv_path}:1: missing column {', '.join(map(repr, missing))}; "
                f"found columns: {', '.join(header)}"
            )
        cols = [header.index(k) if k else None for k in keys]
        for row in reader:
            if not row:  # blank line
                continue
            line = reader.line_num
            problem = None
            if len(row) != len(header):
                problem = f"expected {len(header)} fields, got {len(row)}"
            else:
                values = [row[c] if c is not None else "" for c in cols]
                if not values[0].strip():
                    problem = "empty image path"
                elif self.label_key and not values[2].strip():
                    problem = "empty label"
            if problem is not None:
                if self.skip_bad:
                    self.skipped += 1
                    continue
                raise DataError(f"{self.csv_path}:{line}: {problem}")
            label = values[2].strip() if self.label_key else None
            self._rows.append((line, values[0].strip(), values[1], label))

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def captions(self) -> list[str]:
        """Captions in row order."""
        return [caption for _, _, caption, _ in self._rows]

    @property
    def labels(self) -> list[str]:
        """Labels in row order (needs `label_key`)."""
        if not self.label_key:
            raise DataError(f"{self.csv_path}: no label column was requested (label_key is None)")
        return [label for _, _, _, label in self._rows]  # type: ignore[misc]

    def image_path(self, i: int) -> Path:
        """The resolved path of item i's image."""
        path = Path(self._rows[i][1])
        return path if path.is_absolute() else self.root / path

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        decoded = self.cache.get(i) if self.cache is not None else None
        if decoded is None:
            line, path, caption, label = self._rows[i]
            try:
                img = load_image(self.image_path(i))
            except DECODE_ERRORS as err:
                if self.skip_bad:
                    return None
                raise DataError(
                    f"{self.csv_path}:{line}: image '{path}' cannot be read: {reason(err)}"
                ) from err
            decoded = Decoded(
                self.transform.pixels(img), text_value(self.tokenize, caption), caption, label
            )
            if self.cache is not None:
                self.cache[i] = decoded
        return decoded.item(self.transform, i)

    def __repr__(self) -> str:
        return f"CsvDataset({str(self.csv_path)!r}, {len(self)} rows, skipped={self.skipped})"


def collate(batch: list[dict[str, Any] | None]) -> dict[str, Any]:
    """Batch dataset items: drop `None` (skipped) items, stack images and token tensors.

    Returns `{"image": (B, 3, H, W), "text": (B, L) tensor or list of str, "caption": [str],
    "index": LongTensor (B,), "skipped": int}` plus `"label": [str]` when items have labels.
    `"skipped"` counts the `None` items dropped from this batch; a batch whose items were all
    skipped has B = 0 (`image` is then an empty tensor) and should be passed over.

    Example:
        >>> loader = torch.utils.data.DataLoader(ds, batch_size=64, collate_fn=collate)  # doctest: +SKIP
    """
    items = [b for b in batch if b is not None]
    out: dict[str, Any] = {"skipped": len(batch) - len(items)}
    if not items:
        out.update(
            image=torch.empty(0), text=[], caption=[], index=torch.empty(0, dtype=torch.long)
        )
        return out
    out["image"] = torch.stack([b["image"] for b in items])
    texts = [b["text"] for b in items]
    out["text"] = torch.stack(texts) if isinstance(texts[0], torch.Tensor) else texts
    out["caption"] = [b["caption"] for b in items]
    out["index"] = torch.tensor([b["index"] for b in items], dtype=torch.long)
    if "label" in items[0]:
        out["label"] = [b["label"] for b in items]
    for key in items[0].keys() - out.keys():  # e.g. a reinforced sample's stored embeddings
        values = [b[key] for b in items]
        out[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return out
