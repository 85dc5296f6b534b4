"""Profile export folders (or a PyTorch model file, in torch eager) on one device and write one
profile record per tower: ``<out>/<device>/<artifact>/<tower>.json`` (docs/design.md).

What to profile comes from the manifests; how to time it from the device
(:mod:`export.profile.devices`); the record from :func:`export.profile.record.profile_record`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tqdm import tqdm

from compress.errors import UserError
from export.profile.devices import Settings, Tower, open_device
from export.profile.record import profile_record, record_path, write_record

PYTORCH = "pytorch-fp32"  # the artifact name of a model file profiled in torch eager


def towers_of(path: str | os.PathLike, batch_size: int = 1) -> list[Tower]:
    """The towers to profile: every export folder at or below ``path``, or a model file's two
    towers in torch eager (at ``batch_size``).

    Raises:
        UserError: ``path`` is neither.
    """
    from export.artifact import export_folders, read_export
    from export.verify import TOWERS

    path = Path(path)
    if path.is_file():
        return pytorch_towers(path, batch_size)
    towers = []
    for folder in export_folders(path):
        manifests = read_export(folder)
        towers += [Tower(folder / t, manifests[t], folder.name) for t in TOWERS]
    return towers


def pytorch_towers(path: Path, batch_size: int = 1) -> list[Tower]:
    """A float model file's towers as torch eager runs them (folded), described like exported
    ones: fixed input shapes, FLOPs counted on the model, the file's SHA-256."""
    import torch

    from compress.models import load_model, read_record, reparameterize
    from compress.models.clip import NormalizedTower
    from export.manifest import sha256_file, tensor_spec
    from export.profile.flops import count_flops

    if read_record(path).quantization is not None:
        raise UserError(
            f"{path}: an INT8 model file (its graphs simulate int8 in fp32, which says nothing "
            "about int8 speed); profile its exports instead"
        )
    model, record = load_model(path)
    model = reparameterize(model)  # folded, as every export is
    size, context = model.visual.image_size, model.text.context_length
    examples = {
        "image": torch.zeros(batch_size, 3, size, size),
        "text": torch.zeros(batch_size, context, dtype=torch.int64),
    }
    names = {"image": ("image", "float32"), "text": ("tokens", "int64")}
    digest = sha256_file(path)
    towers = []
    for tower, example in examples.items():
        module = NormalizedTower(model.visual if tower == "image" else model.text).eval()
        manifest = {
            "model": record.name,
            "tower": tower,
            "target": "pytorch",
            "precision": "fp32",
            "file": path.name,
            "sha256": digest,
            "inputs": [tensor_spec(names[tower][0], example.shape, names[tower][1])],
            "flops": count_flops(module, example),
            "tokenizer": {"eot_id": model.text.eot_id},
        }
        towers.append(Tower(path.parent, manifest, PYTORCH))
    return towers


def profile(
    path: str | os.PathLike,
    device: str,
    out_dir: str | os.PathLike,
    settings: Settings,
    options: dict[str, Any] | None = None,
    *,
    batch_size: int = 1,
    towers: list[Tower] | None = None,
) -> dict[str, Any]:
    """Profile every tower at or below ``path`` (or ``towers``) on ``device`` and write their
    records; returns ``{"device", "records": {artifact: {tower: path}}, "skipped": {artifact:
    why}}``. A progress bar per artifact shows its towers as they finish."""
    dev = open_device(device, options)
    towers = towers if towers is not None else towers_of(path, batch_size)
    records: dict[str, dict[str, str]] = {}
    skipped: dict[str, str] = {}
    by_artifact: dict[str, list[Tower]] = {}
    for tower in towers:
        by_artifact.setdefault(tower.artifact, []).append(tower)
    for artifact, group in by_artifact.items():
        reason = dev.skip_reason(group[0])
        if reason is not None:
            skipped[artifact] = reason
            tqdm.write(f"[profile] {artifact} on {dev.name}: skipped ({reason})")
            continue
        bar = tqdm(group, desc=f"{artifact} on {dev.name}", unit="tower", leave=True)
        for tower in bar:
            measured = dev.measure(tower, settings)
            record = profile_record(
                measured, tower.manifest, artifact=artifact, warmup=settings.warmup
            )
            where = record_path(out_dir, dev.name, artifact, tower.manifest["tower"])
            write_record(where, record)
            records.setdefault(artifact, {})[tower.manifest["tower"]] = str(where)
            bar.set_postfix_str(
                f"{tower.manifest['tower']} p50 {record['latency_ms']['p50']:.2f} ms"
            )
    return {"device": dev.name, "records": records, "skipped": skipped}
