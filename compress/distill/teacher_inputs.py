"""A student's batch as a teacher sees it: images re-sized and re-normalised, captions re-tokenised."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from compress.models.clip import CLIP


class TeacherInputs:
    """Turns a student's batch into a teacher's inputs when their preprocessing differs:
    images are un-normalised, resized (bicubic, antialiased) and re-normalised; captions are
    re-tokenised for the teacher's context length, or by its own tokenizer where it has one."""

    def __init__(self, teacher: CLIP, student: CLIP) -> None:
        self.size = teacher.visual.image_size
        same_image = (
            self.size == student.visual.image_size and teacher.preprocess == student.preprocess
        )
        self.source = None if same_image else self._stats(student)
        self.target = self._stats(teacher)
        same_text = teacher.own_tokenizer is None and (
            teacher.text.context_length,
            teacher.text.eot_id,
        ) == (student.text.context_length, student.text.eot_id)
        self.tokenize = None if same_text else teacher.tokenize

    @staticmethod
    def _stats(model: CLIP) -> tuple[torch.Tensor, torch.Tensor]:
        mean, std = (torch.tensor(model.preprocess[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
        return mean, std

    def __call__(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        images, tokens = batch["image"], batch["text"]
        if self.source is not None:
            (mean, std), (t_mean, t_std) = (
                (m.to(images.device), s.to(images.device)) for m, s in (self.source, self.target)
            )
            pixels = images * std + mean
            if pixels.shape[-1] != self.size:
                pixels = F.interpolate(
                    pixels, size=(self.size, self.size), mode="bicubic", antialias=True
                )
            images = (pixels.clamp(0, 1) - t_mean) / t_std
        if self.tokenize is not None:
            tokens = self.tokenize(batch["caption"])
        return images, tokens
