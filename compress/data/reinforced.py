"""Reinforced datasets (MobileCLIP, Vasu et al. 2024): webdataset shards in DataCompDR's record
layout, written with an index of checksums and read back, ours or Apple's, as plain dicts.

One sample is the members ``<key>.jpg`` (or ``<key>.url.txt``), ``.txt``, ``.syn.json``,
``.paug.json``, ``.npz`` and ``.json``; docs/design.md, "Reinforced shards", says what each holds.
"""

from __future__ import annotations

import bisect
import glob
import hashlib
import io
import json
import os
import tarfile
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from compress.data.datasets import DECODE_ERRORS, DataError, load_image, reason
from compress.data.shards import StrictTarInfo, expand_shards, iter_tar_samples
from compress.errors import UserError
from compress.io import sha256_file, write_json

FORMAT = "edgeclip.reinforced/1"
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
# Members every sample has besides its image (or url); the image is checked separately.
REQUIRED = ("txt", "syn.json", "paug.json", "npz", "json")
# The index fields that must agree before per-rank indexes can be merged.
MERGE_FIELDS = ("teachers", "dims", "d_total", "scales", "k", "n", "augmentation")


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


class _ShardFile:
    """One shard being written: a tar under a temp name, renamed to its final name by `finish`.

    A writer that dies (an exception, or a kill) leaves at most the dot-prefixed ``.tmp`` file,
    never a partial shard under the name readers and the index use.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        # Open across many add() calls; finish() or abort() closes it.
        self.tar = tarfile.open(self.tmp, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
        self.samples = 0
        self.first_key: str | None = None
        self.last_key: str | None = None

    def add(self, key: str, members: dict[str, bytes]) -> None:
        """Append one sample, its members adjacent and sorted by name (webdataset order)."""
        for name in sorted(f"{key}.{ext}" for ext in members):
            data = members[name[len(key) + 1 :]]
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o444, 0  # mtime 0: reproducible sha
            self.tar.addfile(info, io.BytesIO(data))
        self.samples += 1
        self.first_key = self.first_key or key
        self.last_key = key

    def finish(self) -> dict[str, Any]:
        """Close, flush to disk, rename into place; the shard's index entry."""
        self.tar.close()
        with open(self.tmp, "rb") as f:
            os.fsync(f.fileno())
        entry = {
            "file": self.path.name,
            "samples": self.samples,
            "sha256": sha256_file(self.tmp),
            "first_key": self.first_key,
            "last_key": self.last_key,
        }
        os.replace(self.tmp, self.path)
        return entry

    def abort(self) -> None:
        """Drop the unfinished shard."""
        self.tar.close()
        self.tmp.unlink(missing_ok=True)


class ReinforcedWriter:
    """Writes reinforced samples to ``<out_dir>/<prefix>-000000.tar``, … and an index.

    Keys must be written in increasing order (zero-padded numbers sort right): the index keeps
    only each shard's first and last key, and `done_keys` tells a resumed run what is done by
    range. The index is rewritten (atomically, ``"complete": false``) after every finished
    shard, so a killed run can resume from the shards it completed; `close` marks it complete.
    With ``resume=True`` an existing index in ``out_dir`` is continued (its settings must
    match); without it an existing index is an error rather than silently overwritten.
    Used as a context manager, an exception drops the shard in progress and writes no index.

    Example:
        >>> with ReinforcedWriter("dr", "rank0", ["big", "small"], [8, 4], k=3, n=2,
        ...                       augmentation={"size": 224}, samples_per_shard=1000) as w:
        ...     w.add("000000000", uid="ab12", caption="a dog", syn_text=["dog", "a pet"],
        ...           param_aug=[[[0, 0, 32, 32], [[5, -12.0]]]] * 3, image=jpeg_bytes,
        ...           image_emb=np.zeros((3, 12)), text_emb=np.zeros((3, 12)))  # doctest: +SKIP
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        prefix: str,
        teachers: Sequence[str],
        dims: Sequence[int],
        k: int,
        n: int,
        augmentation: dict,
        samples_per_shard: int,
        fp16: bool = True,
        *,
        scales: Sequence[float] | None = None,
        biases: Sequence[float | None] | None = None,
        index_name: str = "index.json",
        resume: bool = False,
    ) -> None:
        if len(teachers) != len(dims) or not teachers:
            raise ValueError(f"need one dim per teacher, got teachers={teachers}, dims={dims}")
        if k < 1 or n < 0 or samples_per_shard < 1:
            raise ValueError(
                f"need k >= 1, n >= 0, samples_per_shard >= 1; got {k}, {n}, {samples_per_shard}"
            )
        self.out_dir = Path(out_dir)
        self.prefix = prefix
        self.samples_per_shard = int(samples_per_shard)
        self.fp16 = fp16
        self.index_path = self.out_dir / index_name
        self.index: dict[str, Any] = {
            "format": FORMAT,
            "teachers": list(teachers),
            "dims": [int(d) for d in dims],
            "d_total": int(sum(dims)),
            # each teacher's logit scale: the distillation targets are softmax(s_m·I_m·T_mᵀ)
            "scales": [float(x) for x in scales] if scales is not None else None,
            "k": int(k),
            "n": int(n),
            "augmentation": dict(augmentation),
            "fp16": bool(fp16),
            "complete": False,
            "samples": 0,
            "shards": [],
        }
        if biases is not None and any(b is not None for b in biases):
            # each sigmoid-trained teacher's logit bias (None for softmax ones); a softmax
            # target drops it (a constant per row), a sigmoid one uses σ(s_m·I_m·T_mᵀ + b_m)
            self.index["biases"] = [None if b is None else float(b) for b in biases]
        if self.index_path.exists():
            if not resume:
                raise UserError(
                    f"{self.index_path} already exists; pass resume=True to continue it, or "
                    "write to another folder"
                )
            self._resume(read_index(self.index_path))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        shards = self.index["shards"]
        self.last_key: str | None = shards[-1]["last_key"] if shards else None
        self._shard: _ShardFile | None = None

    def _resume(self, old: dict[str, Any]) -> None:
        """Continue `old`: same settings, its shards kept, numbering going on after them."""
        _check_same(self.index, old, str(self.index_path))
        self.index["shards"] = old["shards"]
        self.index["samples"] = old["samples"]

    @property
    def d_total(self) -> int:
        return self.index["d_total"]

    def add(
        self,
        key: str,
        *,
        uid: str,
        caption: str,
        syn_text: Sequence[str],
        param_aug: list,
        image_emb: np.ndarray,
        text_emb: np.ndarray,
        image: bytes | None = None,
        image_ext: str = "jpg",
        url: str | None = None,
        sha256: str | None = None,
    ) -> None:
        """Add one sample: the image file's bytes (stored as ``.<image_ext>``: jpg, png, …)
        and/or its ``url``, the caption,
        N synthetic captions, K augmentations' parameters, and the ensemble's embeddings
        (``image_emb`` K×D_total, ``text_emb`` (1+N)×D_total with row 0 the real caption).
        ``sha256`` records the hash of an image that is not stored; with ``image`` it is computed.
        """
        k, n, d = self.index["k"], self.index["n"], self.d_total
        if not key or "." in key or "/" in key:
            raise ValueError(f"sample key {key!r}: must be non-empty, without '.' or '/'")
        if self.last_key is not None and key <= self.last_key:
            raise ValueError(f"sample key {key!r} does not sort after {self.last_key!r}")
        if image is None and url is None:
            raise ValueError(f"sample {key!r}: give the image bytes or its url")
        if np.shape(image_emb) != (k, d) or np.shape(text_emb) != (1 + n, d):
            raise ValueError(
                f"sample {key!r}: need image_emb ({k}, {d}) and text_emb ({1 + n}, {d}), got "
                f"{np.shape(image_emb)} and {np.shape(text_emb)}"
            )
        if len(syn_text) != n or len(param_aug) != k:
            raise ValueError(
                f"sample {key!r}: need {n} syn_text and {k} param_aug, got {len(syn_text)} "
                f"and {len(param_aug)}"
            )
        dtype = np.float16 if self.fp16 else np.float32
        members = {
            "txt": caption.encode("utf-8"),
            "syn.json": _json_bytes({"syn_text": list(syn_text)}),
            # A JSON string inside the JSON, as in Apple's shards (one short field to parse).
            "paug.json": _json_bytes({"param_aug": json.dumps(param_aug)}),
            "npz": _npz_bytes(
                image_emb=np.asarray(image_emb, dtype), text_emb=np.asarray(text_emb, dtype)
            ),
            "json": _json_bytes(
                {"uid": uid, "sha256": hashlib.sha256(image).hexdigest() if image else sha256}
            ),
        }
        if image_ext not in IMAGE_EXTS:
            raise ValueError(
                f"sample {key!r}: image_ext {image_ext!r}, expected one of {IMAGE_EXTS}"
            )
        if image is not None:
            members[image_ext] = image
        if url is not None:
            members["url.txt"] = url.encode("utf-8")
        if self._shard is None:
            number = len(self.index["shards"])
            self._shard = _ShardFile(self.out_dir / f"{self.prefix}-{number:06d}.tar")
        self._shard.add(key, members)
        self.last_key = key
        if self._shard.samples >= self.samples_per_shard:
            self._finish_shard()

    def _finish_shard(self) -> None:
        """Rename the shard in progress into place and record it in the (incomplete) index."""
        entry = self._shard.finish()
        self._shard = None
        self.index["shards"].append(entry)
        self.index["samples"] += entry["samples"]
        write_json(self.index_path, self.index)

    def close(self) -> dict[str, Any]:
        """Finish the last shard and write the complete index; returns the index."""
        if self._shard is not None:
            self._finish_shard()
        self.index["complete"] = True
        write_json(self.index_path, self.index)
        return self.index

    def abort(self) -> None:
        """Drop the shard in progress; finished shards and the index written so far stay."""
        if self._shard is not None:
            self._shard.abort()
            self._shard = None

    def __enter__(self) -> ReinforcedWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def read_index(path: str | os.PathLike) -> dict[str, Any]:
    """Load and check a shard-set index; a missing or malformed one is a one-line `UserError`."""
    try:
        index = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: index not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not a JSON index ({err})") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise UserError(f"{path}: not a reinforced-shard index (format {FORMAT!r} expected)")
    missing = [f for f in (*MERGE_FIELDS, "shards") if f not in index]
    if missing:
        raise UserError(f"{path}: index lacks {', '.join(missing)}")
    return index


class KeyRanges:
    """The keys an index's shards hold, as sorted (first, last) ranges: ``key in ranges``."""

    def __init__(self, ranges: Sequence[tuple[str, str]]) -> None:
        self.ranges = sorted(ranges)
        self._firsts = [first for first, _ in self.ranges]

    def __contains__(self, key: str) -> bool:
        i = bisect.bisect_right(self._firsts, key) - 1
        return i >= 0 and key <= self.ranges[i][1]

    def __repr__(self) -> str:
        return f"KeyRanges({len(self.ranges)} ranges)"


def done_keys(index: dict[str, Any]) -> KeyRanges:
    """The keys already written to `index`'s shards, for a resumed generation to skip.

    Relies on the writer's increasing keys; use it on one rank's own index (ranks whose keys
    interleave would overlap in a merged one).
    """
    return KeyRanges([(s["first_key"], s["last_key"]) for s in index["shards"] if s["samples"]])


def _check_same(index: dict[str, Any], other: dict[str, Any], where: str) -> None:
    """Refuse `other` when its teachers, dims, scales, biases, K, N or augmentation differ from
    `index`'s."""
    for field in (*MERGE_FIELDS, "biases"):  # biases: only where a teacher has one
        if index.get(field) != other.get(field):
            raise UserError(
                f"{where}: {field} is {json.dumps(other.get(field))}, expected "
                f"{json.dumps(index.get(field))}"
            )


def merge_indexes(paths: Sequence[str | os.PathLike], out: str | os.PathLike) -> dict[str, Any]:
    """Merge per-rank indexes into one at `out`; shard files are named relative to `out`.

    Every index must be complete and agree on teachers, dims, K, N and augmentation; shard
    files may not repeat. Returns the merged index.

    Example:
        >>> merge_indexes(["dr/index-rank0.json", "dr/index-rank1.json"], "dr/index.json")  # doctest: +SKIP
    """
    if not paths:
        raise UserError("merge_indexes: no index given")
    out = Path(out)
    merged: dict[str, Any] | None = None
    seen: set[str] = set()
    for path in paths:
        index = read_index(path)
        if not index.get("complete"):
            raise UserError(f"{path}: index is incomplete (its writer did not close)")
        if merged is None:
            merged = {**index, "samples": 0, "shards": []}
        _check_same(merged, index, str(path))
        merged["fp16"] = merged["fp16"] and index.get("fp16", True)
        for shard in index["shards"]:
            file = Path(os.path.relpath(Path(path).parent / shard["file"], out.parent)).as_posix()
            if file in seen:
                raise UserError(f"{path}: shard {file} is already in another index")
            seen.add(file)
            merged["shards"].append({**shard, "file": file})
            merged["samples"] += shard["samples"]
    write_json(out, merged)
    return merged


# ---------------------------------------------------------------------------------------------
# Reading


class _ImageFolder:
    """Images stored beside the shards as files named by uid (``<uid>.jpg``, …)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def get(self, uid: str) -> bytes | None:
        if not uid or "/" in uid or "\\" in uid or uid.startswith("."):
            return None  # a uid is a file name, never a path out of the folder
        for ext in IMAGE_EXTS:
            path = self.folder / f"{uid}.{ext}"
            if path.is_file():
                return path.read_bytes()
        return None

    def __str__(self) -> str:
        return str(self.folder)


class _ImageShards:
    """Images in a second shard set (e.g. img2dataset's), joined by the uid in ``<key>.json``.

    The first lookup scans the shards once and keeps only (shard, offset, size) per uid, so the
    images stay on disk; the shards must be uncompressed tars (they are read by seeking).
    """

    def __init__(self, shards: list[str], skip_bad: bool) -> None:
        self.shards, self.skip_bad = shards, skip_bad
        self._where: dict[str, tuple[str, int, int]] | None = None

    def _scan(self, shard: str) -> Iterator[tuple[str, tuple[str, int, int]]]:
        """(uid, (shard, offset, size)) for every sample of `shard` with an image and a uid."""
        samples: dict[str, dict[str, Any]] = {}
        try:
            with tarfile.open(shard, mode="r:", tarinfo=StrictTarInfo) as tar:
                for info in tar:
                    stem, _, ext = info.name.rpartition("/")[2].partition(".")
                    sample = samples.setdefault(stem, {})
                    if ext == "json":
                        sample["uid"] = json.loads(tar.extractfile(info).read()).get("uid")
                    elif ext.lower() in IMAGE_EXTS:
                        sample["image"] = (shard, info.offset_data, info.size)
        except FileNotFoundError:
            raise DataError(f"{shard}: file not found") from None
        except (tarfile.TarError, OSError, EOFError, ValueError, AttributeError) as err:
            raise DataError(f"{shard}: cannot index image shard: {err}") from None
        for key, sample in samples.items():
            if sample.get("uid") is None or "image" not in sample:
                if not self.skip_bad:
                    raise DataError(f"{shard}: sample '{key}' has no image or no uid in {key}.json")
                continue
            yield str(sample["uid"]), sample["image"]

    def get(self, uid: str) -> bytes | None:
        if self._where is None:
            self._where = {uid: at for shard in self.shards for uid, at in self._scan(shard)}
        at = self._where.get(uid)
        if at is None:
            return None
        with open(at[0], "rb") as f:
            f.seek(at[1])
            return f.read(at[2])

    def __str__(self) -> str:
        return f"{self.shards[0]} (+{len(self.shards) - 1} shards)"


def _shard_list(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Shard paths from a brace pattern, a glob, or a list of paths."""
    if isinstance(source, (str, os.PathLike)):
        found: list[str] = []
        for part in expand_shards(os.fspath(source)):
            found += sorted(glob.glob(part)) if glob.has_magic(part) else [part]
        return found
    return [os.fspath(s) for s in source]


def _image_source(images: Any, skip_bad: bool) -> _ImageFolder | _ImageShards | None:
    if images is None:
        return None
    if isinstance(images, (str, os.PathLike)) and Path(images).is_dir():
        return _ImageFolder(Path(images))
    shards = _shard_list(images)
    if not shards:
        raise UserError(f"images {images}: neither a folder nor any shard")
    return _ImageShards(shards, skip_bad)


def _decode_json(shard: str, key: str, members: dict[str, bytes], ext: str) -> Any:
    try:
        return json.loads(members[ext])
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{shard}: member '{key}.{ext}' is not JSON: {err}") from None


class ReinforcedShards:
    """Reinforced samples as plain dicts, from our shard set or Apple's published one.

    ``source`` is an ``index.json`` (every shard's sha256 is checked before its samples are
    used, and the shapes against the index's K, N and D_total), or shards without an index: a
    brace pattern, a glob or a list. ``images`` supplies images the shards do not hold
    (Apple's shards carry only ``url.txt``): a folder of files named ``<uid>.<ext>`` or a second
    shard set (pattern, glob or list) joined by the uid in each sample's ``.json``.

    Each item: ``key, uid, image`` (PIL RGB, or bytes with ``decode_images=False``), ``caption,
    syn_text`` (list), ``param_aug`` (list, decoded from Apple's JSON string or given as a list),
    ``image_emb`` (float32 K×D) and ``text_emb`` (float32 (1+N)×D, row 0 the real caption).

    Bad data (a checksum mismatch, a truncated tar, a missing member or image, bad shapes) is a
    one-line `DataError` naming the shard and member. With ``skip_bad=True`` it is skipped and
    counted: ``skipped`` counts samples (a shard failing its checksum counts its indexed
    samples; a truncated shard without an index counts one), ``bad_shards`` the shards given up.

    Example:
        >>> for s in ReinforcedShards("dr/index.json"):  # doctest: +SKIP
        ...     s["image_emb"].shape, s["param_aug"][0]
        >>> apple = ReinforcedShards("dcdr/{00000000..00000009}.tar", images="dcdr_images/")  # doctest: +SKIP
    """

    def __init__(
        self,
        source: str | os.PathLike | Sequence[str | os.PathLike],
        images: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
        skip_bad: bool = False,
        *,
        decode_images: bool = True,
    ) -> None:
        self.index: dict[str, Any] | None = None
        if isinstance(source, (str, os.PathLike)) and os.fspath(source).endswith(".json"):
            self.index = read_index(source)
            folder = Path(source).parent
            self.shards = [os.fspath(folder / s["file"]) for s in self.index["shards"]]
        else:
            self.shards = _shard_list(source)
        if not self.shards:
            raise UserError(f"{source}: no shards")
        self.images = _image_source(images, skip_bad)
        self.skip_bad = skip_bad
        self.decode_images = decode_images
        self.skipped = 0
        self.bad_shards = 0

    def _verify(self, shard: str, entry: dict[str, Any]) -> None:
        """The shard's sha256 must match the index before any of its samples is trusted."""
        try:
            actual = sha256_file(shard)
        except FileNotFoundError:
            raise DataError(f"{shard}: file not found") from None
        if actual != entry["sha256"]:
            raise DataError(
                f"{shard}: sha256 {actual[:12]}… does not match the index ({entry['sha256'][:12]}…)"
                "; the shard is corrupt or truncated"
            )

    def _image(self, shard: str, key: str, uid: str, members: dict[str, bytes]) -> Any:
        ext = next((e for e in IMAGE_EXTS if e in members), None)
        if ext is not None:
            data, where = members[ext], f"'{key}.{ext}'"
        elif self.images is None:
            raise DataError(
                f"{shard}: sample '{key}' has no image member (.jpg/.png/…); its images are "
                "elsewhere? pass images= (a folder or shards)"
            )
        else:
            data, where = self.images.get(uid), f"uid '{uid}' in {self.images}"
            if data is None:
                raise DataError(
                    f"{shard}: sample '{key}': no image for uid '{uid}' in {self.images}"
                )
        if not self.decode_images:
            return data
        try:
            return load_image(io.BytesIO(data))
        except DECODE_ERRORS as err:
            raise DataError(
                f"{shard}: sample '{key}': image {where} cannot be read: {reason(err)}"
            ) from err

    def _decode(self, shard: str, key: str, members: dict[str, bytes]) -> dict[str, Any]:
        """One sample's members → the item dict; missing or malformed members raise DataError."""
        for ext in REQUIRED:
            if ext not in members:
                raise DataError(f"{shard}: sample '{key}': missing member '{key}.{ext}'")
        meta = _decode_json(shard, key, members, "json")
        uid = str(meta.get("uid", key)) if isinstance(meta, dict) else key
        syn = _decode_json(shard, key, members, "syn.json")
        paug = _decode_json(shard, key, members, "paug.json")
        try:
            syn_text, param_aug = list(syn["syn_text"]), paug["param_aug"]
            if isinstance(param_aug, str):  # Apple's layout: the value is JSON text
                param_aug = json.loads(param_aug)
            with np.load(io.BytesIO(members["npz"])) as npz:
                image_emb = np.asarray(npz["image_emb"], np.float32)
                text_emb = np.asarray(npz["text_emb"], np.float32)
        except (KeyError, TypeError, ValueError, OSError, zipfile.BadZipFile) as err:
            raise DataError(
                f"{shard}: sample '{key}': malformed .syn.json, .paug.json or .npz "
                f"({type(err).__name__}: {err})"
            ) from None
        self._check_shapes(shard, key, image_emb, text_emb, syn_text, param_aug)
        return {
            "key": key,
            "uid": uid,
            "shard": shard,
            "image": self._image(shard, key, uid, members),
            "caption": members["txt"].decode("utf-8", errors="replace").strip(),
            "syn_text": syn_text,
            "param_aug": param_aug,
            "image_emb": image_emb,
            "text_emb": text_emb,
        }

    def _check_shapes(self, shard, key, image_emb, text_emb, syn_text, param_aug) -> None:
        """K rows of image_emb (one per augmentation), 1+N of text_emb, D from the index."""
        k, n = len(param_aug), len(syn_text)
        d = self.index["d_total"] if self.index else image_emb.shape[-1]
        if self.index and (k, n) != (self.index["k"], self.index["n"]):
            raise DataError(
                f"{shard}: sample '{key}': {k} param_aug and {n} syn_text, the index says "
                f"K={self.index['k']}, N={self.index['n']}"
            )
        if image_emb.shape != (k, d) or text_emb.shape != (1 + n, d):
            raise DataError(
                f"{shard}: sample '{key}.npz': image_emb {image_emb.shape} and text_emb "
                f"{text_emb.shape}, expected ({k}, {d}) and ({1 + n}, {d})"
            )

    def _read(self, shard: str, entry: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
        """A shard's good samples, checked against its index entry when there is one."""
        if entry is not None:
            try:
                self._verify(shard, entry)
            except DataError:
                if not self.skip_bad:
                    raise
                self.bad_shards += 1
                self.skipped += entry["samples"]  # none of them was read
                return
        try:
            samples = iter_tar_samples(shard)
            count = 0
            while True:
                try:
                    key, members = next(samples)
                except StopIteration:
                    break
                count += 1
                try:
                    yield self._decode(shard, key, members)
                except DataError:
                    if not self.skip_bad:
                        raise
                    self.skipped += 1
            if entry is not None and count != entry["samples"]:
                raise DataError(f"{shard}: {count} samples, the index says {entry['samples']}")
        except DataError:
            if not self.skip_bad:
                raise
            self.bad_shards += 1
            self.skipped += 1  # the sample the tar broke off in (or the count that disagreed)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        entries = self.index["shards"] if self.index else [None] * len(self.shards)
        for shard, entry in zip(self.shards, entries, strict=True):
            yield from self._read(shard, entry)

    def __repr__(self) -> str:
        where = "indexed" if self.index else "unindexed"
        return f"ReinforcedShards({len(self.shards)} {where} shards, skip_bad={self.skip_bad})"
