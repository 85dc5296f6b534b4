"""Readers for image–caption data: open_clip-style CSV and webdataset tar shards."""

from __future__ import annotations

import csv
import io
import os
import random
import re
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from compress.errors import UserError

Transform = Callable[[Image.Image], torch.Tensor]
Tokenize = Callable[[str], Any]


class DataError(UserError):
    """Malformed data. The message is one line naming the file and the sample, e.g.
    `data/train.csv:14: image 'images/train/train-000012.png' cannot be read: file not found`.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


def _reason(err: BaseException) -> str:
    """A short, path-free description of why an image failed to load."""
    if isinstance(err, FileNotFoundError):
        return "file not found"
    if isinstance(err, UnidentifiedImageError):
        return "cannot identify image file"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err) or type(err).__name__


def _load_image(src: str | os.PathLike | io.BytesIO) -> Image.Image:
    """Open and fully decode an image, so corrupt data fails here and not in a transform."""
    img = Image.open(src)
    img.load()
    return img


def _text_value(tokenize: Tokenize | None, caption: str) -> Any:
    if tokenize is None:
        return caption
    tokens = tokenize(caption)
    # open_clip-style tokenizers return (1, context) for one string; samples carry (context,).
    if isinstance(tokens, torch.Tensor) and tokens.ndim == 2 and tokens.shape[0] == 1:
        tokens = tokens[0]
    return tokens


# Image decoding raises a zoo of types on corrupt bytes (OSError, SyntaxError, ValueError,
# struct.error, EOFError, DecompressionBombError, ...): all of them mean "bad sample".
_DECODE_ERRORS = (Exception,)


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

    Example:
        >>> ds = CsvDataset("scenes/val.csv", image_transform(64))  # doctest: +SKIP
        >>> ds[0]["caption"]  # doctest: +SKIP
        'a large red circle left of a small blue square'
    """

    def __init__(
        self,
        csv_path: str | os.PathLike,
        transform: Transform,
        tokenize: Tokenize | None = None,
        *,
        image_key: str = "filepath",
        caption_key: str | None = "caption",
        label_key: str | None = None,
        skip_bad: bool = False,
    ) -> None:
        self.csv_path = Path(csv_path)
        self.root = self.csv_path.parent
        self.transform = transform
        self.tokenize = tokenize
        self.label_key = label_key
        self.skip_bad = skip_bad
        self.skipped = 0  # rows dropped at load (skip_bad=True)
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
            raise DataError(f"{self.csv_path}: cannot be read: {_reason(err)}") from None

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
        line, path, caption, label = self._rows[i]
        try:
            img = _load_image(self.image_path(i))
        except _DECODE_ERRORS as err:
            if self.skip_bad:
                return None
            raise DataError(
                f"{self.csv_path}:{line}: image '{path}' cannot be read: {_reason(err)}"
            ) from err
        item = {
            "image": self.transform(img),
            "text": _text_value(self.tokenize, caption),
            "caption": caption,
            "index": i,
        }
        if self.label_key:
            item["label"] = label
        return item

    def __repr__(self) -> str:
        return f"CsvDataset({str(self.csv_path)!r}, {len(self)} rows, skipped={self.skipped})"


# ---------------------------------------------------------------------------------------------
# Webdataset shards

_BRACE = re.compile(r"\{([^{}]*)\}")


def expand_shards(pattern: str) -> list[str]:
    """Expand a shard pattern: `{000000..000009}` ranges, `{a,b}` alternatives, `::` lists.

    Example:
        >>> expand_shards("wds/train-{000..002}.tar")
        ['wds/train-000.tar', 'wds/train-001.tar', 'wds/train-002.tar']
    """
    if "::" in pattern:
        return [s for part in pattern.split("::") if part for s in expand_shards(part)]
    m = _BRACE.search(pattern)
    if m is None:
        return [pattern]
    prefix, body, suffix = pattern[: m.start()], m.group(1), pattern[m.end() :]
    numeric = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if numeric:
        lo, hi = numeric.groups()
        if int(lo) > int(hi):
            raise DataError(f"shard pattern {pattern!r}: range {{{body}}} runs backwards")
        width = len(lo) if len(lo) == len(hi) else 0  # {000..009} keeps its zero padding
        alternatives = [str(v).zfill(width) for v in range(int(lo), int(hi) + 1)]
    else:
        alternatives = body.split(",")
    return [s for alt in alternatives for s in expand_shards(prefix + alt + suffix)]


class _StrictTarInfo(tarfile.TarInfo):
    """Makes a cut-off or garbled header an error: tarfile silently ends the archive there."""

    @classmethod
    def fromtarfile(cls, tar: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tar)
        except tarfile.EOFHeaderError:
            raise  # an all-zero block: the archive's proper end
        except tarfile.HeaderError as err:
            if str(err) in ("empty header", "truncated header"):
                raise tarfile.ReadError("unexpected end of data") from None
            raise tarfile.ReadError(f"corrupt header ({err})") from None


def _split_key(name: str) -> tuple[str, str] | None:
    """`dir/abc.seg.png` → (`dir/abc`, `seg.png`): the key ends at the basename's first dot."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not dot or not stem:
        return None
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def iter_tar_samples(shard: str | os.PathLike) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Stream a webdataset shard: (key, {extension: bytes}) per sample, members grouped by key.

    Members of one sample must be adjacent (the webdataset convention). Raises `DataError`
    naming the shard and the last good sample when the tar is truncated or corrupt; the samples
    before that point have already been yielded, the sample in progress is not.

    Example:
        >>> for key, members in iter_tar_samples("wds/train-000000.tar"):  # doctest: +SKIP
        ...     caption = members["txt"].decode()
    """
    key: str | None = None
    members: dict[str, bytes] = {}
    last: str | None = None
    try:
        with tarfile.open(shard, mode="r|*", tarinfo=_StrictTarInfo) as tar:
            for info in tar:
                split = _split_key(info.name) if info.isfile() else None
                if split is None:
                    continue
                if split[0] != key:
                    if key is not None:
                        yield key, members
                        last = key
                    key, members = split[0], {}
                members[split[1]] = tar.extractfile(info).read()
    except FileNotFoundError:
        raise DataError(f"{shard}: file not found") from None
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        reason = str(err) or type(err).__name__
        what = "truncated" if "end of data" in reason or isinstance(err, EOFError) else "corrupt"
        if key is None:
            where = "before the first sample"
        else:
            read = f"samples up to '{last}' were read" if last else "no sample before it"
            where = f"at sample '{key}' ({read})"
        raise DataError(f"{shard}: {what} {where}: {reason}") from None
    if key is not None:
        yield key, members


def _shuffled(items: Iterable[Any], size: int, rng: random.Random) -> Iterator[Any]:
    """Approximate shuffle through a buffer of `size` items (constant memory)."""
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        j = rng.randrange(size)
        yield buffer[j]
        buffer[j] = item
    rng.shuffle(buffer)
    yield from buffer


class WdsDataset(IterableDataset):
    """Iterable dataset over webdataset tar shards, read with `tarfile` in streaming mode.

    Yields the same items as `CsvDataset`; `"index"` is the running sample number of this
    iterator (with DataLoader workers, `n * num_workers + worker_id`, so indices stay unique).
    Shards are split across ranks (`shards[rank::world_size]`), then across DataLoader workers;
    a worker left without a shard yields nothing. With `shuffle_buffer > 0` the shard order and
    a sample buffer are shuffled, reseeded by `set_epoch` from (seed, epoch, rank) — call it
    before each epoch (with `persistent_workers=True` workers keep the epoch they started with).

    Malformed data raises `DataError` naming the shard and sample: a truncated or corrupt tar,
    a sample without an image or caption, an undecodable image. With `skip_bad=True` a bad
    sample is skipped and a truncated shard is abandoned at that point, each counted in
    `skipped` (`truncated_shards` counts the latter alone). The counters live in the process
    that iterates: with DataLoader workers they stay in the workers' copies.

    Example:
        >>> ds = WdsDataset("scenes/wds/train-{000000..000004}.tar", image_transform(64),
        ...                 shuffle_buffer=1000, seed=0)  # doctest: +SKIP
        >>> ds.set_epoch(1)  # doctest: +SKIP
    """

    def __init__(
        self,
        shards: str | os.PathLike | Sequence[str | os.PathLike],
        transform: Transform,
        tokenize: Tokenize | None = None,
        *,
        image_exts: Sequence[str] = ("png", "jpg", "jpeg", "webp"),
        caption_ext: str = "txt",
        label_ext: str | None = None,
        shuffle_buffer: int = 0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        skip_bad: bool = False,
    ) -> None:
        if isinstance(shards, (str, os.PathLike)):
            self.shards = expand_shards(os.fspath(shards))
        else:
            self.shards = [os.fspath(s) for s in shards]
        if not self.shards:
            raise DataError("no webdataset shards given")
        if not 0 <= rank < world_size:
            raise ValueError(
                f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}"
            )
        self.rank_shards = self.shards[rank::world_size]
        if not self.rank_shards:
            raise DataError(
                f"rank {rank} of {world_size} gets no shard: only {len(self.shards)} shard(s) "
                f"(first: {self.shards[0]}); write at least one shard per rank"
            )
        self.transform = transform
        self.tokenize = tokenize
        self.image_exts = tuple(e.lower().lstrip(".") for e in image_exts)
        self.caption_ext = caption_ext.lower().lstrip(".")
        self.label_ext = label_ext.lower().lstrip(".") if label_ext else None
        self.shuffle_buffer = int(shuffle_buffer)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.skip_bad = skip_bad
        self.epoch = 0
        self.skipped = 0
        self.truncated_shards = 0

    def set_epoch(self, epoch: int) -> None:
        """Reseed the shard order and shuffle buffer for `epoch`."""
        self.epoch = int(epoch)

    def _samples(self, shards: list[str]) -> Iterator[tuple[str, str, dict[str, bytes]]]:
        for shard in shards:
            try:
                for key, members in iter_tar_samples(shard):
                    yield shard, key, members
            except DataError:
                if not self.skip_bad:
                    raise
                self.skipped += 1
                self.truncated_shards += 1

    def _decode(self, shard: str, key: str, members: dict[str, bytes]) -> dict[str, Any]:
        found = ", ".join(f".{e}" for e in members)
        image_ext = next((e for e in self.image_exts if e in members), None)
        if image_ext is None:
            wanted = "/".join(f".{e}" for e in self.image_exts)
            raise DataError(f"{shard}: sample '{key}' has no image ({wanted}); it has {found}")
        for ext, what in ((self.caption_ext, "caption"), (self.label_ext, "label")):
            if ext is not None and ext not in members:
                raise DataError(f"{shard}: sample '{key}' has no {what} (.{ext}); it has {found}")
        try:
            caption = members[self.caption_ext].decode("utf-8").strip()
            label = members[self.label_ext].decode("utf-8").strip() if self.label_ext else None
        except UnicodeDecodeError:
            raise DataError(
                f"{shard}: sample '{key}': caption or label is not UTF-8 text"
            ) from None
        try:
            img = _load_image(io.BytesIO(members[image_ext]))
        except _DECODE_ERRORS as err:
            raise DataError(
                f"{shard}: sample '{key}': image '{key}.{image_ext}' cannot be read: {_reason(err)}"
            ) from err
        item = {
            "image": self.transform(img),
            "text": _text_value(self.tokenize, caption),
            "caption": caption,
        }
        if label is not None:
            item["label"] = label
        return item

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        order = list(self.rank_shards)
        if self.shuffle_buffer > 0:
            # Same permutation in every worker of a rank, so the workers' slices partition it.
            random.Random(f"shards:{self.seed}:{self.epoch}:{self.rank}").shuffle(order)
        samples: Iterable[tuple[str, str, dict[str, bytes]]] = self._samples(order[worker::workers])
        if self.shuffle_buffer > 0:
            rng = random.Random(f"buffer:{self.seed}:{self.epoch}:{self.rank}:{worker}")
            samples = _shuffled(samples, self.shuffle_buffer, rng)
        n = 0
        for shard, key, members in samples:
            try:
                item = self._decode(shard, key, members)
            except DataError:
                if not self.skip_bad:
                    raise
                self.skipped += 1
                continue
            item["index"] = n * workers + worker
            n += 1
            yield item

    def __repr__(self) -> str:
        return (
            f"WdsDataset({len(self.shards)} shards, rank {self.rank}/{self.world_size}, "
            f"shuffle_buffer={self.shuffle_buffer}, seed={self.seed}, epoch={self.epoch})"
        )


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
    return out
