"""Webdataset shards: brace patterns, tar samples grouped by key (from local files or from any
URL webdataset's `gopen` opens), and a streamed, shuffled, per-rank dataset of them."""

from __future__ import annotations

import io
import os
import random
import re
import signal
import tarfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Any
from urllib.parse import urlparse

from torch.utils.data import IterableDataset, get_worker_info

from compress.data.datasets import (
    DECODE_ERRORS,
    DataError,
    Decoded,
    Tokenize,
    load_image,
    reason,
    text_value,
)
from compress.data.transforms import ImageTransform

# What a skipped sample leaves in a shard's decoded stream (``skip_bad``).
BAD, TRUNCATED = "bad sample", "truncated shard"

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


class StrictTarInfo(tarfile.TarInfo):
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


def is_url(shard: str | os.PathLike) -> bool:
    """Whether `shard` is a URL (`pipe:CMD`, `https://…`, `gs://…`) rather than a local path.

    A one-letter scheme is a Windows drive (`C:\\x.tar`), so it stays a path.
    """
    return len(urlparse(os.fspath(shard)).scheme) > 1


# Why curl (webdataset's reader of http(s)/sftp/ftps/scp) or the shell of a `pipe:` exits so.
_EXIT_HINTS = {
    6: "curl: cannot resolve the host",
    7: "curl: cannot connect",
    22: "curl: the server answered with an HTTP error such as 404",
    28: "curl: timed out",
    127: "command not found",
}


def _open_url(shard: str) -> IO[bytes]:
    """Open a shard URL with webdataset's `gopen`: a `pipe:` command's or curl's stdout, …"""
    from webdataset.gopen import gopen, set_options  # imported here: local shards don't need it

    try:
        stream = gopen(shard, "rb")
    except (ValueError, OSError) as err:
        why = str(err).removeprefix(f"{shard}: ")
        hint = " (read it with pipe:COMMAND, a command writing the shard to stdout)"
        raise DataError(f"{shard}: cannot open: {why}{hint if 'no gopen' in why else ''}") from None
    # A Pipe raises from read or close when the command fails; _close_url says so in one line.
    set_options(stream, ignore_errors=True)
    return stream


def _close_url(shard: str, stream: IO[bytes]) -> None:
    """Close a shard's stream; a command that exited with a failure status is the error."""
    stream.close()
    status = getattr(stream, "status", None)  # a webdataset Pipe's exit status
    # Closing a stream read to the tar's end may leave the command writing padding: SIGPIPE.
    if status is None or status in (*stream.ignore_status, -signal.SIGPIPE):
        return
    why = f"killed by signal {-status}" if status < 0 else _EXIT_HINTS.get(status)
    raise DataError(f"{shard}: command exited with status {status}" + (f" ({why})" if why else ""))


def iter_tar_samples(shard: str | os.PathLike) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Stream a webdataset shard: (key, {extension: bytes}) per sample, members grouped by key.

    `shard` is a local path or a URL that webdataset's `gopen` opens: `pipe:COMMAND` (its
    stdout, e.g. `pipe:aws s3 cp s3://bucket/x.tar -`), `http(s)://` (with curl), `gs://`
    (gsutil), `file:`, …. Members of one sample must be adjacent (the webdataset convention).
    Raises `DataError` naming the shard and the last good sample when the tar is truncated or
    corrupt, or naming the shard when a URL cannot be opened or its command fails; the samples
    before that point have already been yielded, the sample in progress is not.

    Example:
        >>> for key, members in iter_tar_samples("pipe:cat wds/train-000000.tar"):  # doctest: +SKIP
        ...     caption = members["txt"].decode()
    """
    name = os.fspath(shard)
    stream = _open_url(name) if is_url(name) else None
    path = name if stream is None else None  # tarfile opens a local shard itself
    key: str | None = None
    members: dict[str, bytes] = {}
    last: str | None = None
    try:
        with tarfile.open(path, mode="r|*", fileobj=stream, tarinfo=StrictTarInfo) as tar:
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
        if stream is not None:
            _close_url(name, stream)
    except FileNotFoundError:
        raise DataError(f"{shard}: file not found") from None
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        if stream is not None:
            _close_url(name, stream)  # a failed command explains a cut-off or empty stream
        reason = str(err) or type(err).__name__
        what = "truncated" if "end of data" in reason or isinstance(err, EOFError) else "corrupt"
        if key is None:
            where = "before the first sample"
        else:
            read = f"samples up to '{last}' were read" if last else "no sample before it"
            where = f"at sample '{key}' ({read})"
        raise DataError(f"{shard}: {what} {where}: {reason}") from None
    finally:
        if stream is not None:
            stream.close()  # a no-op unless the reader stopped early; the status says nothing then
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
    """Iterable dataset over webdataset tar shards, read with `tarfile` in streaming mode from
    local paths or URLs (`pipe:aws s3 cp s3://b/x-{000..009}.tar -`, `https://…`; see
    `iter_tar_samples`).

    Yields the same items as `CsvDataset`; `"index"` is the running sample number of this
    iterator (with DataLoader workers, `n * num_workers + worker_id`, so indices stay unique).
    Shards are split across ranks (`shards[rank::world_size]`), then across DataLoader workers;
    a worker left without a shard yields nothing. With `shuffle_buffer > 0` the shard order and
    a sample buffer are shuffled, reseeded by `set_epoch` from (seed, epoch, rank) — call it
    before each epoch (with `persistent_workers=True` workers keep the epoch they started with).

    Malformed data raises `DataError` naming the shard and sample: a missing, truncated or
    corrupt tar (a URL that cannot be opened, a failing `pipe:` command), a sample without an
    image or caption, an undecodable image. With `skip_bad=True` a bad sample is skipped and a
    truncated (or unreadable) shard is abandoned at that point, each counted in
    `skipped` (`truncated_shards` counts the latter alone). The counters live in the process
    that iterates: with DataLoader workers they stay in the workers' copies.

    Given a `cache` dict, the decoded samples of every shard read to its end are kept in it
    (uint8 pixels at the transform's size and the token ids, ~S²·3 bytes a sample), so later
    epochs neither read nor decode the shard again; the items are the same. Datasets of the same
    shards, image size and tokenizer may share one dict. It fills in the process that iterates,
    so it helps without DataLoader workers, or with persistent ones.

    Example:
        >>> ds = WdsDataset("scenes/wds/train-{000000..000004}.tar", image_transform(64),
        ...                 shuffle_buffer=1000, seed=0)  # doctest: +SKIP
        >>> ds.set_epoch(1)  # doctest: +SKIP
    """

    def __init__(
        self,
        shards: str | os.PathLike | Sequence[str | os.PathLike],
        transform: ImageTransform,
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
        cache: dict | None = None,
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
        self.cache: dict[str, list[Decoded | str]] | None = cache

    def set_epoch(self, epoch: int) -> None:
        """Reseed the shard order and shuffle buffer for `epoch`."""
        self.epoch = int(epoch)

    def _read(self, shard: str) -> Iterator[Decoded | str]:
        """A shard's samples in tar order, decoded; with ``skip_bad``, ``BAD`` in place of a bad
        sample and ``TRUNCATED`` where a cut-off shard ends."""
        samples = iter_tar_samples(shard)
        while True:
            try:
                key, members = next(samples)
            except StopIteration:
                return
            except DataError:
                if not self.skip_bad:
                    raise
                yield TRUNCATED
                return
            try:
                yield self._decode(shard, key, members)
            except DataError:
                if not self.skip_bad:
                    raise
                yield BAD

    def _records(self, shards: list[str]) -> Iterator[Decoded]:
        """The decoded samples of ``shards`` in order, counting the skipped ones; a shard read
        to its end is kept in memory when caching, and later epochs read it from there."""
        for shard in shards:
            cached = self.cache.get(shard) if self.cache is not None else None
            keep = self.cache is not None and cached is None
            kept: list[Decoded | str] = []
            for record in self._read(shard) if cached is None else cached:
                if keep:
                    kept.append(record)
                if isinstance(record, str):
                    self.skipped += 1
                    self.truncated_shards += record == TRUNCATED
                else:
                    yield record
            if keep:
                self.cache[shard] = kept

    def _decode(self, shard: str, key: str, members: dict[str, bytes]) -> Decoded:
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
            img = load_image(io.BytesIO(members[image_ext]))
        except DECODE_ERRORS as err:
            raise DataError(
                f"{shard}: sample '{key}': image '{key}.{image_ext}' cannot be read: {reason(err)}"
            ) from err
        return Decoded(
            self.transform.pixels(img), text_value(self.tokenize, caption), caption, label
        )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        order = list(self.rank_shards)
        if self.shuffle_buffer > 0:
            # Same permutation in every worker of a rank, so the workers' slices partition it.
            random.Random(f"shards:{self.seed}:{self.epoch}:{self.rank}").shuffle(order)
        records: Iterable[Decoded] = self._records(order[worker::workers])
        if self.shuffle_buffer > 0:
            rng = random.Random(f"buffer:{self.seed}:{self.epoch}:{self.rank}:{worker}")
            records = _shuffled(records, self.shuffle_buffer, rng)
        for n, record in enumerate(records):
            yield record.item(self.transform, n * workers + worker)

    def __repr__(self) -> str:
        return (
            f"WdsDataset({len(self.shards)} shards, rank {self.rank}/{self.world_size}, "
            f"shuffle_buffer={self.shuffle_buffer}, seed={self.seed}, epoch={self.epoch})"
        )
