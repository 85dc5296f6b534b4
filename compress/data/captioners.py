"""Captioners: the plug-ins that give the reinforce stage N synthetic captions per image
(registry ``captioners``): ``existing`` keeps the dataset's own, ``coca`` samples them from
open_clip's CoCa as DataCompDR does (MobileCLIP, Vasu et al. 2024).

DataCompDR samples each caption from `coca_ViT-L-14` / `mscoco_finetuned_laion2b_s13b_b90k` by
nucleus (top-p 0.9) sampling, 30 tokens at most, and keeps the text before the first full stop.
open_clip 3.3.0's own `CoCa.generate` runs only beside `transformers<4.56` (later versions no
longer export a class it imports, which turns `generate` off), so its top-p loop is written here
over CoCa's forward: EOT suppressed below `min_seq_len` tokens, the top-p nucleus, EOT forced at
`seq_len`. Its randomness
is not torch's: each caption draws from a generator seeded by the image's pixels, its real
caption, the caption's index and the configured seed, so captions are the same whatever the
batch they run in, and the caller's RNG is never touched.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from compress import compat
from compress.data.augment import seed_of
from compress.errors import UserError, first_line
from compress.io import read_state_dict, state_misfits
from compress.registry import Registry

captioners = Registry("captioner")

# (images, their real captions, the dataset's own synthetic captions or None, n) → n captions each
Captioner = Callable[[list[Image.Image], list[str], list[list[str] | None], int], list[list[str]]]


@captioners.register("existing")
def existing_captions(
    images: list[Image.Image], captions: list[str], syn: list[list[str] | None], n: int
) -> list[list[str]]:
    """The dataset's own synthetic captions (``syn.json``; the scenes data carries paraphrases),
    cycled to ``n`` when a sample has fewer.

    Raises:
        ValueError: a sample has none.
    """
    out = []
    for caption, own in zip(captions, syn, strict=True):
        if not own:
            raise ValueError(f"no synthetic captions for {caption!r} (captioner 'existing')")
        out.append([own[i % len(own)] for i in range(n)])
    return out


@dataclass(frozen=True)
class CocaConfig:
    """Which CoCa captions, and how it samples.

    ``checkpoint`` is a local weights file (a state dict, loaded weights-only) used instead of
    downloading ``pretrained``; with neither, the model is randomly initialised (tests only).
    """

    model: str = "coca_ViT-L-14"
    pretrained: str | None = "mscoco_finetuned_laion2b_s13b_b90k"
    checkpoint: str | None = None
    device: str | None = None  # None: cuda when there is one
    seq_len: int = 30  # tokens, SOT and EOT included; longer = slower, every step reruns the prefix
    min_seq_len: int = 5  # EOT is suppressed while the caption has fewer tokens (SOT included)
    top_p: float = 0.9  # nucleus mass; smaller = safer, less varied captions
    temperature: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.top_p <= 1:
            raise UserError(f"coca.top_p: must be in (0, 1], got {self.top_p}")
        if not 1 < self.min_seq_len < self.seq_len:
            raise UserError(
                f"coca.seq_len: must exceed min_seq_len > 1, got {self.seq_len} and {self.min_seq_len}"
            )
        if self.temperature <= 0:
            raise UserError(f"coca.temperature: must be > 0, got {self.temperature}")


_config = CocaConfig()
_loaded: tuple | None = None  # (config, model, preprocess, tokenizer) of the last call


def configure_coca(**fields) -> CocaConfig:
    """Set the ``coca`` captioner's settings (the defaults for every field not given); the model
    is (re)built on the next call.

    Example:
        >>> configure_coca(checkpoint="open_clip_pytorch_model.bin").model
        'coca_ViT-L-14'
    """
    global _config
    _config = CocaConfig(**fields)
    return _config


def _load_weights(model: torch.nn.Module, path: str, name: str) -> None:
    """Load a state dict from ``path`` weights-only; a pickled object or another architecture's
    weights is a one-line UserError."""
    state = read_state_dict(path, "coca checkpoint")
    expected = model.state_dict()
    wrong, extra = state_misfits(state, expected)
    if wrong or extra:
        example = (wrong or extra)[0]
        raise UserError(
            f"coca checkpoint {path}: not a {name} state dict ({len(wrong)} of {len(expected)} "
            f"tensors missing or misshapen, {len(extra)} unexpected; first: {example!r})"
        )
    model.load_state_dict(state)


def _load(cfg: CocaConfig) -> tuple:
    """The CoCa model, its eval preprocessing and tokenizer, built through open_clip."""
    oc = compat.open_clip()
    if cfg.model not in oc.list_models():
        raise UserError(f"coca.model: {cfg.model!r} is not an open_clip model")
    pretrained = None if cfg.checkpoint else cfg.pretrained
    # creation draws random init weights: keep the caller's RNG as it was, and a random-init
    # model (tests) the same every time
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        try:
            model, _, preprocess = oc.create_model_and_transforms(cfg.model, pretrained=pretrained)
        except RuntimeError as err:  # an unknown tag, or no hub to download it from
            raise UserError(
                f"coca: cannot load {cfg.model} {pretrained!r} ({first_line(err)}); "
                "give a local checkpoint instead"
            ) from err
        if not pretrained and not cfg.checkpoint:
            # open_clip 3.3.0 never initialises the decoder's output projection (torch.empty:
            # whatever was in memory); loaded weights replace it, a random init must not
            proj = model.text_decoder.text_projection
            torch.nn.init.normal_(proj, std=proj.shape[0] ** -0.5)
    if not isinstance(model, oc.CoCa):
        raise UserError(f"coca.model: {cfg.model!r} is not a CoCa (captioning) model")
    if cfg.checkpoint:
        _load_weights(model, cfg.checkpoint, cfg.model)
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return cfg, model.to(device).eval(), preprocess, oc.get_tokenizer(cfg.model)


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the fewest most-likely tokens whose probability reaches ``top_p`` (the most likely one
    always), the others set to -inf — transformers' TopPLogitsWarper, which CoCa.generate uses."""
    sorted_logits, order = logits.sort(dim=-1)  # ascending
    drop = sorted_logits.softmax(dim=-1).cumsum(dim=-1) <= 1 - top_p
    drop[..., -1] = False
    return logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))


def _uniforms(
    images: list[Image.Image], captions: list[str], n: int, cfg: CocaConfig
) -> np.ndarray:
    """One uniform per caption and step, from the image's pixels, its caption and the caption's
    index: (len(images) * n, seq_len), image i's captions in rows i*n … i*n + n - 1."""
    rows = []
    for image, caption in zip(images, captions, strict=True):
        digest = hashlib.sha256(image.tobytes())
        digest.update(f"{image.mode}{image.size}{caption}".encode())
        rows += [
            seed_of(cfg.seed, f"{digest.hexdigest()}:{j}").random(cfg.seq_len) for j in range(n)
        ]
    return np.stack(rows)


@torch.inference_mode()
def generate(model, pixels: torch.Tensor, u: torch.Tensor, cfg: CocaConfig, sot: int, eot: int):
    """Token ids (rows, ≤ seq_len) sampled by CoCa for ``pixels`` (B, 3, H, W), rows // B captions
    per image, step t's token drawn with uniform ``u[:, t]`` by inverting the nucleus' CDF."""
    rows = u.shape[0]
    out = model(pixels)  # image_features (B, D), image_embs (B, tokens, width)
    latent = out["image_features"].repeat_interleave(rows // len(pixels), dim=0)
    embs = out["image_embs"].repeat_interleave(rows // len(pixels), dim=0)
    tokens = torch.full((rows, 1), sot, dtype=torch.long, device=pixels.device)
    done = torch.zeros(rows, dtype=torch.bool, device=pixels.device)
    for step in range(cfg.seq_len - 1):
        step_out = model(None, tokens, image_latent=latent, image_embs=embs, output_labels=False)
        logits = step_out["logits"][:, -1]  # (rows, vocab): the next token's
        if tokens.shape[1] < cfg.min_seq_len:
            logits[:, eot] = float("-inf")
        probs = (top_p_filter(logits, cfg.top_p) / cfg.temperature).softmax(dim=-1)
        cdf = probs.double().cumsum(dim=-1)
        # right=True: the first token whose CDF exceeds the draw, so never a zero-probability one
        draw = u[:, step : step + 1] * cdf[:, -1:]
        token = torch.searchsorted(cdf, draw, right=True)[:, 0].clamp(max=cdf.shape[1] - 1)
        if step == cfg.seq_len - 2:
            token.fill_(eot)  # as CoCa.generate: the last slot always ends the caption
        token[done] = eot
        tokens = torch.cat([tokens, token[:, None]], dim=1)
        done |= token == eot
        if done.all():
            break
    return tokens


def _text(ids: list[int], tokenizer, sot: int, eot: int) -> str:
    """A caption's text: SOT/EOT dropped, then the first sentence, as DataCompDR keeps it."""
    ids = ids[1 : ids.index(eot)] if eot in ids else ids[1:]
    return tokenizer.decode([i for i in ids if i != sot]).split(".")[0].strip()


@captioners.register("coca")
def coca_captions(
    images: list[Image.Image], captions: list[str], syn: list[list[str] | None], n: int
) -> list[list[str]]:
    """``n`` captions per image sampled from open_clip's CoCa (:func:`configure_coca` picks the
    model; it loads on the first call). The same images and captions give the same output."""
    global _loaded
    cfg = _config
    if _loaded is None or _loaded[0] != cfg:
        _loaded = _load(cfg)
    _, model, preprocess, tokenizer = _loaded
    device = next(model.parameters()).device
    sot, eot = tokenizer.sot_token_id, tokenizer.eot_token_id
    pixels = torch.stack([preprocess(image) for image in images]).to(device)
    u = torch.from_numpy(_uniforms(images, captions, n, cfg)).to(device)  # float64
    ids = generate(model, pixels, u, cfg, sot, eot).tolist()
    texts = [_text(row, tokenizer, sot, eot) for row in ids]
    return [texts[i * n : (i + 1) * n] for i in range(len(images))]
