"""Zero-shot classification (prompt-template ensembles) and image↔text retrieval (Radford et al. 2021)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from compress.data.datasets import CsvDataset, collate
from compress.data.transforms import image_transform
from compress.models import CLIP


class Encoder(Protocol):
    """What evaluation needs of a model: L2-normalised embeddings of a batch of each modality.
    A :class:`~compress.models.CLIP` is one; so is an exported artifact run in its runtime
    (:class:`export.artifact.ArtifactModel`)."""

    def encode_image(self, images: torch.Tensor) -> torch.Tensor: ...

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor: ...


def _inference_mode(model: Encoder) -> None:
    if isinstance(model, torch.nn.Module):
        model.eval()


@torch.no_grad()
def embed_images(
    model: Encoder, dataset: Dataset, batch_size: int
) -> tuple[torch.Tensor, list[dict]]:
    """Image embeddings (N, D) of a dataset, with its captions and labels, in dataset order."""
    _inference_mode(model)
    embeddings, rows = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate):
        embeddings.append(model.encode_image(batch["image"]))
        for i in range(len(batch["caption"])):
            rows.append({k: batch[k][i] for k in ("caption", "label") if k in batch})
    return torch.cat(embeddings), rows


@torch.no_grad()
def embed_texts(
    model: Encoder, tokenize: Callable, texts: Sequence[str], batch_size: int
) -> torch.Tensor:
    _inference_mode(model)
    return torch.cat(
        [
            model.encode_text(tokenize(list(texts[i : i + batch_size])))
            for i in range(0, len(texts), batch_size)
        ]
    )


def classifier(
    model: Encoder,
    tokenize: Callable,
    classnames: Sequence[str],
    templates: Sequence[str],
    batch_size: int,
):
    """Class embeddings (C, D): each class's prompts embedded, averaged over templates, renormalised."""
    prompts = [t.format(c) for c in classnames for t in templates]
    emb = embed_texts(model, tokenize, prompts, batch_size).view(
        len(classnames), len(templates), -1
    )
    return F.normalize(emb.mean(dim=1), dim=-1)


def topk_accuracy(logits: torch.Tensor, targets: torch.Tensor, k: int) -> float:
    k = min(k, logits.shape[1])
    hits = (logits.topk(k, dim=1).indices == targets[:, None]).any(dim=1)
    return hits.float().mean().item()


def zeroshot(
    model: Encoder,
    dataset: Dataset,
    tokenize: Callable,
    templates: Sequence[str],
    batch_size: int = 256,
) -> dict:
    """Top-1/top-5 of classifying each image among the dataset's labels (sorted, as class names)."""
    start = time.perf_counter()
    image_emb, rows = embed_images(model, dataset, batch_size)
    classnames = sorted({r["label"] for r in rows})
    index = {c: i for i, c in enumerate(classnames)}
    targets = torch.tensor([index[r["label"]] for r in rows])
    logits = image_emb @ classifier(model, tokenize, classnames, templates, batch_size).T
    seconds = time.perf_counter() - start
    return {
        "top1": topk_accuracy(logits, targets, 1),
        "top5": topk_accuracy(logits, targets, 5),
        "classes": len(classnames),
        "images": len(rows),
        "images_per_s": len(rows) / seconds,
    }


def recall_at(
    similarity: torch.Tensor, correct: torch.Tensor, ks: Sequence[int]
) -> dict[int, float]:
    """The fraction of queries (rows) with a correct candidate among their top k columns.

    ``correct`` (Q, C) marks every right answer: an image whose caption is word-for-word another
    image's caption matches both, so duplicate captions cannot make a perfect model miss.
    """
    best = similarity.masked_fill(~correct, float("-inf")).max(dim=1, keepdim=True).values
    rank = ((similarity >= best) & ~correct).sum(dim=1)  # wrong candidates scored at least as high
    return {k: (rank < k).float().mean().item() for k in ks}


def retrieval(
    model: Encoder,
    dataset: Dataset,
    tokenize: Callable,
    batch_size: int = 256,
    ks: Sequence[int] = (1, 5, 10),
) -> dict:
    """Image→text and text→image recall@k; image i's caption is caption i (and any identical one)."""
    start = time.perf_counter()
    image_emb, rows = embed_images(model, dataset, batch_size)
    captions = [r["caption"] for r in rows]
    text_emb = embed_texts(model, tokenize, captions, batch_size)
    group = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    ids = torch.tensor([group[c] for c in captions])
    correct = ids[:, None] == ids[None, :]  # symmetric: (images, captions) and (captions, images)
    similarity = image_emb @ text_emb.T  # (N images, N captions)
    i2t, t2i = recall_at(similarity, correct, ks), recall_at(similarity.T, correct, ks)
    seconds = time.perf_counter() - start
    out = {f"image_to_text_r{k}": v for k, v in i2t.items()}
    out |= {f"text_to_image_r{k}": v for k, v in t2i.items()}
    return out | {
        "pairs": len(rows),
        "unique_captions": len(group),
        "pairs_per_s": len(rows) / seconds,
    }


def evaluate_csvs(
    model: CLIP | Encoder,
    zeroshot_csvs: dict[str, Path],
    retrieval_csvs: dict[str, Path],
    *,
    templates: Sequence[str],
    label_key: str = "label",
    batch_size: int = 256,
    skip_bad: bool = False,
) -> dict:
    """Zero-shot metrics of labelled CSVs and retrieval metrics of captioned CSVs, keyed by task name.

    A CLIP model is fed through its own preprocessing and tokenizer; any other encoder brings
    its own as ``transform`` and ``tokenize`` attributes (an artifact: those of its manifests).
    """
    if isinstance(model, CLIP):
        transform = image_transform(model.visual.image_size, **model.preprocess)
    else:
        transform = model.transform
    tokenize = model.tokenize
    results = {"zeroshot": {}, "retrieval": {}}
    for task, path in zeroshot_csvs.items():
        data = CsvDataset(path, transform, caption_key=None, label_key=label_key, skip_bad=skip_bad)
        results["zeroshot"][task] = zeroshot(model, data, tokenize, templates, batch_size)
    for task, path in retrieval_csvs.items():
        data = CsvDataset(path, transform, skip_bad=skip_bad)
        results["retrieval"][task] = retrieval(model, data, tokenize, batch_size)
    return results
