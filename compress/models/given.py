"""A model as a recipe names it: ``openclip:<arch>``, ``mobileclip:<name>`` or a registry name,
with its weights (a checkpoint, an open_clip tag, or random init) and its record."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from compress.errors import require
from compress.models.apple import NAMES, PREFIX, load_apple
from compress.models.apple import parse_name as apple_name
from compress.models.build import build_model, require_model_name
from compress.models.clip import CLIP
from compress.models.loaders import (
    LoaderError,
    foreign_tokenizer,
    load_openclip,
    missing_tokenizer,
    tokenizer_cleaning,
)
from compress.models.loaders import parse_name as openclip_name
from compress.models.record import ModelRecord, load_model
from compress.tokenizer import FileTokenizer, TokenizerFileError


def load_given(
    model: str,
    checkpoint: str | Path | None = None,
    pretrained: str | None = None,
    tokenizer: str | Path | None = None,
) -> tuple[CLIP, ModelRecord]:
    """A model named by a recipe: ``openclip:<arch>`` (open_clip weights), ``mobileclip:<name>``
    (an Apple ml-mobileclip checkpoint) or a registry name (an edgeclip model file as
    checkpoint, or random init), with its record. ``tokenizer``: its own tokenizer file or
    folder (:class:`compress.tokenizer.FileTokenizer`), which SigLIP's architectures need; its
    record's text section names it (file, sha256), so the model file rebuilds it."""
    arch, apple = openclip_name(model), apple_name(model)
    source = {
        "source": model,
        "checkpoint": str(checkpoint) if checkpoint else None,
        "pretrained": pretrained,
    }
    needed = foreign_tokenizer(arch) if arch is not None else None
    if needed is not None and tokenizer is None:
        raise LoaderError(missing_tokenizer(arch, needed))
    if arch is not None or apple is not None:
        if apple is not None and pretrained is not None:
            raise LoaderError(f"{model}: Apple's checkpoints have no tags; give checkpoint: <file>")
        if arch is not None:
            loaded, config = load_openclip(arch, checkpoint, pretrained)
        else:
            loaded, config = load_apple(apple, checkpoint)
        record = ModelRecord(config["name"], config, provenance=source)
    elif checkpoint is None:
        loaded, record = build_model(model), ModelRecord.named(model, **source)
    else:
        loaded, record = load_model(checkpoint)
        record = record.derive(provenance={**source, "parent": record.provenance})
    if tokenizer is None:
        return loaded, record
    clean = tokenizer_cleaning(arch) if arch is not None else "whitespace"
    return own_tokenizer(loaded, record, tokenizer, clean)


def own_tokenizer(
    model: CLIP, record: ModelRecord, path: str | Path, clean: str
) -> tuple[CLIP, ModelRecord]:
    """``model`` reading text by the tokenizer file at ``path``, and its record naming it."""
    try:
        tokenize = FileTokenizer(path, model.text.context_length, clean)
    except TokenizerFileError as err:
        raise LoaderError(str(err)) from None
    rows = model.text.token_embed.num_embeddings
    if tokenize.vocab_size > rows:
        raise LoaderError(
            f"{tokenize.path}: {tokenize.vocab_size} tokens, more than the {rows} rows of "
            f"{record.name}'s token table: not this model's tokenizer"
        )
    model.own_tokenizer = tokenize
    text = {**record.config["text"], "tokenizer": tokenize.spec()}
    return model, replace(record, config={**record.config, "text": text})


@dataclass(frozen=True)
class TeacherConfig:
    """A given, not trained, model: ``openclip:<arch>``, ``mobileclip:<name>`` (Apple's
    ml-mobileclip layout) or a registry name, and its weights.

    ``checkpoint`` is a local file (an open_clip checkpoint for ``openclip:`` models, Apple's
    ``mobileclip_<name>.pt`` for ``mobileclip:`` ones, an edgeclip model file otherwise);
    ``pretrained`` is an open_clip tag, downloaded by open_clip. With neither, the weights are a
    random initialisation (useful only to try the path).
    """

    model: str
    checkpoint: str | None = None
    pretrained: str | None = None
    # its own tokenizer, where it is not CLIP's BPE: a Hugging Face tokenizer.json, or the
    # folder holding it (SigLIP's SentencePiece models; `edgeclip ls openclip` marks them)
    tokenizer: str | None = None

    def __post_init__(self) -> None:
        require(
            self.checkpoint is None or self.pretrained is None,
            "pretrained",
            "give either checkpoint or pretrained, not both",
        )
        if self.model.startswith("mobileclip:"):
            require(
                self.model[len(PREFIX) :] in NAMES,
                "model",
                f"unknown Apple MobileCLIP {self.model!r}; expected one of: "
                + ", ".join(PREFIX + name for name in NAMES),
            )
            require(
                self.pretrained is None,
                "pretrained",
                "Apple's MobileCLIP files have no tags; give checkpoint: mobileclip_<name>.pt",
            )
        elif not self.model.startswith("openclip:"):
            require_model_name(self.model, "'openclip:<arch>', 'mobileclip:<name>' or ")
            require(
                self.pretrained is None,
                "pretrained",
                "pretrained tags name open_clip weights; use model: openclip:<arch>",
            )
