"""The scenes dataset on disk: every split as PNG files with a CSV, the training splits also as
byte-reproducible webdataset shards, and an index that lets a rerun with the same settings skip."""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import multiprocessing
import os
import shutil
import tarfile
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from compress.data.scenes import (
    CLASSES,
    COLOURS,
    SHAPES,
    SIZES,
    SPLITS,
    VERSION,
    WDS_SPLITS,
    caption,
    make_scene,
    paraphrases,
    render,
    sample_key,
)


def _png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _ShardWriter:
    """Writes `<prefix>-NNNNNN.tar` shards of at most `shard_size` samples, byte-reproducibly."""

    def __init__(self, root: Path, split: str, shard_size: int) -> None:
        self.root, self.split, self.shard_size = root, split, shard_size
        self.shards: list[dict] = []
        self._tar: tarfile.TarFile | None = None
        self._count = 0

    def add(self, key: str, members: list[tuple[str, bytes]]) -> None:
        if self._tar is None:
            name = f"wds/{self.split}-{len(self.shards):06d}.tar"
            # USTAR with zeroed owner/time fields: the same samples always give the same bytes.
            # Held open across add() calls, closed by _close().
            self._tar = tarfile.open(self.root / name, "w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115
            self.shards.append({"file": name, "count": 0})
        for ext, data in members:
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            self._tar.addfile(info, io.BytesIO(data))
        self._count += 1
        if self._count == self.shard_size:
            self._close()

    def _close(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tar = None
            shard = self.shards[-1]
            shard["count"] = self._count
            shard["sha256"] = _sha256_file(self.root / shard["file"])
            self._count = 0

    def close(self) -> list[dict]:
        self._close()
        return self.shards


def _render_sample(split: str, seed: int, image_size: int, index: int) -> tuple:
    """One sample, ready to write: (key, PNG bytes, caption, label, paraphrases)."""
    scene, label = make_scene(split, index, seed)
    png = _png_bytes(render(scene, image_size))
    return sample_key(split, index), png, caption(scene), label, paraphrases(scene)


def _write_split(
    root: Path, split: str, n: int, seed: int, image_size: int, shard_size: int, pool: Executor
) -> list[dict]:
    (root / "images" / split).mkdir(parents=True)
    shards = _ShardWriter(root, split, shard_size) if split in WDS_SPLITS else None
    is_zs = split in CLASSES
    render_one = functools.partial(_render_sample, split, seed, image_size)
    with open(root / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["filepath", "caption", "label"] if is_zs else ["filepath", "caption"])
        # Samples are rendered in parallel and written here, in order: the same bytes either way.
        for key, png, text, label, syn in pool.map(render_one, range(n), chunksize=256):
            rel = f"images/{split}/{key}.png"
            (root / rel).write_bytes(png)
            writer.writerow([rel, text, label] if is_zs else [rel, text])
            if shards is not None:
                meta = {"uid": key, "sha256": hashlib.sha256(png).hexdigest()}
                # Paraphrases go where reinforced shards keep synthetic captions (docs/design.md).
                shards.add(
                    key,
                    [
                        ("png", png),
                        ("txt", text.encode()),
                        ("syn.json", json.dumps({"syn_text": syn}).encode()),
                        ("json", json.dumps(meta).encode()),
                    ],
                )
    return shards.close() if shards is not None else []


class _InProcess(Executor):
    """An executor that maps in the calling process (small datasets: no workers to start)."""

    def map(self, fn, *iterables, timeout=None, chunksize=1):
        return map(fn, *iterables)


def _pool(samples: int) -> Executor:
    """Worker processes for rendering when there is enough to render and more than one core."""
    workers = min(os.cpu_count() or 1, samples // 2000)
    if workers < 2:
        return _InProcess()
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def _read_index(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _matches(index: dict | None, params: dict) -> bool:
    return index is not None and all(index.get(k) == v for k, v in params.items())


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename `tmp` to `out`, replacing an existing `out` (a rename cannot replace a full folder)."""
    if not out.exists():
        tmp.rename(out)
        return
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    out.rename(old)
    try:
        tmp.rename(out)
    except OSError:
        old.rename(out)
        raise
    shutil.rmtree(old)


def write_scenes(
    out_dir: str | os.PathLike,
    *,
    seed: int,
    image_size: int,
    sizes: dict[str, int],
    shard_size: int = 1000,
) -> dict:
    """Write the scenes splits as PNGs, open_clip-style CSVs and webdataset shards.

    Layout under `out_dir`: `images/<split>/<key>.png`; `<split>.csv` (`filepath,caption`, plus
    `label` for zs_* splits; paths relative to the CSV); `wds/<split>-NNNNNN.tar` for train and
    val (`<key>.png`, `<key>.txt`, `<key>.syn.json` with the paraphrases as `syn_text`,
    `<key>.json` with uid and sha256); and
    `scenes.json`, the index. Written into a temporary sibling folder and renamed into place;
    an `out_dir` whose index already matches these arguments is returned as is.

    Args:
        out_dir: destination folder (replaced if it holds a scenes dataset with other arguments).
        seed: root seed; every (split, sample) draws from its own stream derived from it.
        image_size: side of the square images in pixels.
        sizes: samples per split, e.g. `{"train": 5000, "val": 500, "zs_shape": 600}`.
        shard_size: samples per webdataset shard.

    Returns:
        The index written to `scenes.json`.

    Example:
        >>> index = write_scenes("/tmp/scenes", seed=0, image_size=64, sizes={"train": 10})
        >>> index["shards"]["train"][0]["count"]
        10
    """
    unknown = [s for s in sizes if s not in SPLITS]
    if unknown:
        raise ValueError(
            f"unknown scenes split(s) {', '.join(map(repr, unknown))}; expected: {', '.join(SPLITS)}"
        )
    if any(int(n) < 0 for n in sizes.values()) or image_size < 8 or shard_size < 1:
        raise ValueError(
            f"need sizes >= 0, image_size >= 8, shard_size >= 1; got {sizes}, {image_size}, {shard_size}"
        )
    out = Path(out_dir)
    params = {
        "version": VERSION,
        "seed": int(seed),
        "image_size": int(image_size),
        "shard_size": int(shard_size),
        "sizes": {s: int(sizes[s]) for s in SPLITS if s in sizes},
    }
    existing = _read_index(out / "scenes.json")
    if _matches(existing, params):
        return existing
    if out.exists() and existing is None and any(out.iterdir()):
        # Never replace a folder we did not write.
        raise FileExistsError(
            f"{out} exists, is not empty and holds no scenes.json; refusing to overwrite it"
        )

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / "wds").mkdir(parents=True)
        shards = {}
        with _pool(sum(params["sizes"].values())) as pool:
            for split, n in params["sizes"].items():
                written = _write_split(
                    tmp, split, n, params["seed"], params["image_size"], params["shard_size"], pool
                )
                if split in WDS_SPLITS:
                    shards[split] = written
        index = {
            **params,
            "splits": {s: {"count": n, "csv": f"{s}.csv"} for s, n in params["sizes"].items()},
            "classes": {s: CLASSES[s] for s in params["sizes"] if s in CLASSES},
            "shards": shards,
            "vocabulary": {"shapes": list(SHAPES), "colours": list(COLOURS), "sizes": list(SIZES)},
        }
        (tmp / "scenes.json").write_text(json.dumps(index, indent=2) + "\n")
        _swap_into_place(tmp, out)
    except OSError:
        # Another process may have finished the same dataset first; that copy is as good.
        shutil.rmtree(tmp, ignore_errors=True)
        other = _read_index(out / "scenes.json")
        if _matches(other, params):
            return other
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return index
