"""Image preprocessing for CLIP towers: resize, centre-crop, normalise (PIL + torch, no torchvision)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


class ImageTransform:
    """PIL image → float32 (3, S, S) tensor: shorter side to S (bicubic), centre crop, normalise.

    Matches open_clip's eval preprocessing (torchvision `Resize(S)` + `CenterCrop(S)` +
    `ToTensor` + `Normalize`) without importing torchvision. A plain class so DataLoader
    workers can pickle it.

    Example:
        >>> t = ImageTransform(32, mean=(0.5,) * 3, std=(0.5,) * 3)
        >>> t(Image.new("RGB", (64, 48))).shape
        torch.Size([3, 32, 32])
    """

    def __init__(
        self,
        image_size: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
    ) -> None:
        if image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        self.image_size = int(image_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self._mean = np.array(self.mean, dtype=np.float32)[:, None, None]
        self._std = np.array(self.std, dtype=np.float32)[:, None, None]

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return self.normalize(self.pixels(img))

    def pixels(self, img: Image.Image) -> np.ndarray:
        """The resized, centre-cropped RGB pixels: uint8 (S, S, 3), a quarter of the tensor's size."""
        img = img.convert("RGB")
        s = self.image_size
        w, h = img.size
        if (w, h) != (s, s):
            # Like torchvision: the shorter side becomes s, the longer one is truncated.
            if w <= h:
                new_w, new_h = s, int(s * h / w)
            else:
                new_w, new_h = int(s * w / h), s
            if (new_w, new_h) != (w, h):
                img = img.resize((new_w, new_h), Image.BICUBIC)
            if (new_w, new_h) != (s, s):
                left, top = round((new_w - s) / 2), round((new_h - s) / 2)
                img = img.crop((left, top, left + s, top + s))
        return np.asarray(img)

    def normalize(self, pixels: np.ndarray) -> torch.Tensor:
        """uint8 (S, S, 3) pixels → the normalised float32 (3, S, S) tensor."""
        x = np.ascontiguousarray(pixels.transpose(2, 0, 1)).astype(np.float32) / 255.0
        return torch.from_numpy((x - self._mean) / self._std)

    def __repr__(self) -> str:
        return f"ImageTransform(image_size={self.image_size}, mean={self.mean}, std={self.std})"


def image_transform(
    image_size: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
) -> ImageTransform:
    """The eval/training-time image transform for a tower with `image_size` inputs and the
    normalisation its weights expect (``CLIP.preprocess``).

    Example:
        >>> image_transform(64, (0.5,) * 3, (0.5,) * 3)(Image.new("RGB", (64, 64))).dtype
        torch.float32
    """
    return ImageTransform(image_size, mean, std)
