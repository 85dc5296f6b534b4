"""Reinforcement benchmark: what storing the teachers' knowledge buys per training step.

Goal: with a teacher at least 5× the student's cost, the reinforced path trains at least 3×
faster per sample than online distillation with the same teacher(s) and student.

Renders ``--images`` scenes (64 px), reinforces them once with the teacher (``--k``
augmentations, ``--n`` synthetic captions from the scenes paraphrases) and measures its
throughput (images/s) and the bytes stored per sample; then trains the same student
``--steps`` steps both ways from the same initialisation — online (the teacher runs every step:
TinyCLIP affinity mimicking) and reinforced (stored embeddings, MobileCLIP's loss, no teacher) —
and prints JSON with samples/s of each and their ratio, and the teacher/student forward-cost
ratio that frames it. Random weights: speed does not depend on them. Run it alone on the
machine: other work on the 2 cores moves every number.

Run: python benchmarks/reinforce.py [--teacher vit_b16] [--student demo_student] [--steps 30]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from compress.data.augment import Augmentation
from compress.data.batches import batch_stream
from compress.data.captioners import captioners
from compress.data.reinforced import ReinforcedWriter
from compress.data.replay import ReplayDataset
from compress.data.scenes import caption, make_scene, paraphrases, render
from compress.data.transforms import image_transform
from compress.distill.losses import AffinityMimicking, ReinforcedKD
from compress.distill.reinforce import Sample, reinforce, text_embeddings
from compress.distill.student import DistillObjective, ReinforcedObjective, freeze
from compress.models import ModelRecord
from compress.tokenizer import Tokenizer
from compress.train import train
from edgeclip.recipe import TrainConfig


def scenes(count: int, size: int) -> list[Sample]:
    out = []
    for i in range(count):
        scene, _ = make_scene("train", i, seed=0)
        image = Image.fromarray(render(scene, size))
        out.append(Sample(f"{i:09d}", image, caption(scene), paraphrases(scene)))
    return out


class Online(torch.utils.data.Dataset):
    """The same images, preprocessed for the student: what online distillation reads."""

    def __init__(self, samples: list[Sample], record: ModelRecord) -> None:
        self.samples = samples
        self.transform = image_transform(record.image_size, **record.normalization)
        self.tokenize = Tokenizer(record.context_length)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        s = self.samples[i]
        return {
            "image": self.transform(s.image),
            "text": self.tokenize([s.caption])[0],
            "caption": s.caption,
            "index": i,
        }


def forward_ms(model, size: int, batch: int) -> float:
    """Milliseconds per image of the image and text towers (inference, batch ``batch``)."""
    images = torch.rand(batch, 3, size, size)
    tokens = Tokenizer(model.text.context_length)(["a small red circle"] * batch)
    with torch.inference_mode():
        model(images, tokens)
        begin = time.perf_counter()
        for _ in range(3):
            model(images, tokens)
    return 1e3 * (time.perf_counter() - begin) / (3 * batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="demo_teacher")
    parser.add_argument("--student", default="demo_student")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--n", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    torch.manual_seed(0)
    teacher = freeze(ModelRecord.named(args.teacher).build())
    record = ModelRecord.named(args.student)
    initial = record.build().state_dict()
    cost = {
        "teacher_ms_per_sample": forward_ms(teacher, teacher.visual.image_size, args.batch_size),
        "student_ms_per_sample": forward_ms(
            record.build().eval(), record.image_size, args.batch_size
        ),
    }
    samples = scenes(args.images, 64)
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, warmup=1, log_every=10**6)
    result = {"teacher": args.teacher, "student": args.student, "k": args.k, "n": args.n}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dims = [int(text_embeddings([teacher], ["a"]).shape[1])]
        scale = [float(teacher.logit_scale.exp())]
        size = teacher.visual.image_size
        print("reinforce", file=sys.stderr, flush=True)
        begin = time.perf_counter()
        with ReinforcedWriter(
            tmp / "dr",
            "train",
            [args.teacher],
            dims,
            k=args.k,
            n=args.n,
            augmentation={"size": size, "flip": False, "rand_augment": True},
            samples_per_shard=10**6,
            scales=scale,
        ) as writer:
            reinforce(
                samples,
                [teacher],
                Augmentation(size),
                captioners.get("existing"),
                writer,
                k=args.k,
                n=args.n,
                seed=0,
                batch_size=64,
            )
        seconds = time.perf_counter() - begin
        shard_bytes = sum(p.stat().st_size for p in (tmp / "dr").glob("*.tar"))
        result["reinforce"] = {
            "images_per_s": args.images / seconds,
            "bytes_per_sample": shard_bytes / args.images,
        }
        transform = image_transform(record.image_size, **record.normalization)
        replay = ReplayDataset(  # decoded images kept, as the online side's are
            tmp / "dr" / "index.json", transform, Tokenizer(record.context_length), cache=True
        )
        runs = {
            "online": (
                Online(samples, record),
                lambda s: DistillObjective(AffinityMimicking(), [teacher], s),
            ),
            "reinforced": (replay, lambda s: ReinforcedObjective(ReinforcedKD(1.0, dims, scale))),
        }
        for name, (data, objective) in runs.items():
            print(name, file=sys.stderr, flush=True)
            student = record.build()
            student.load_state_dict(initial)
            summary = train(
                student,
                lambda start, data=data: batch_stream(data, args.batch_size, 0, 0, 1, start),
                cfg,
                tmp / name,
                objective=objective(student),
                desc=name,
            )
            result[name] = {"samples_per_s": summary["samples_per_s"]}
    result["speedup_per_sample"] = (
        result["reinforced"]["samples_per_s"] / result["online"]["samples_per_s"]
    )
    result["teacher_over_student_cost"] = (
        cost["teacher_ms_per_sample"] / cost["student_ms_per_sample"]
    )
    result["forward_cost"] = cost
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
