"""Train a demo CNN on generated shapes and write its weights into the package.

Usage (from the repository root):
    PYTHONPATH=src python scripts/train_demo.py              # DemoCNN (global average pooling)
    PYTHONPATH=src python scripts/train_demo.py --head fc    # DemoCNNFC (flatten + hidden FC)

``--head fc`` keeps the convolutional features of the shipped DemoCNN fixed and trains only the
new head (4x4 max-pooling, flatten, a hidden fully connected layer) on the same training images,
so the two models differ in their head alone; the features of each training image are computed
once per augmented view, which makes this run take minutes instead of a quarter of an hour.

Deterministic for given arguments and thread count (one by default): seeded data, seeded
initialisation, seeded batch order and augmentation, deterministic torch algorithms. The network
is trained with batch normalisation, which is folded into the convolutions before saving.
Prints the held-out accuracy on freshly generated images (seeds never used for training),
separately for single- and multi-instance images.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gradcampp.demo import generate_shapes
from gradcampp.demo.model import (
    FC_WEIGHTS_PATH,
    WEIGHTS_PATH,
    DemoCNN,
    DemoCNNFC,
    fold_batch_norm,
    load_demo_model,
    save_weights,
)

TRAIN_SEED = 0
EVAL_SEED = 1_000_000  # held out: training only ever uses TRAIN_SEED and TRAIN_SEED + 1


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random flips and quarter turns (the shape classes are invariant to both)."""
    k = int(torch.randint(4, (1,), generator=generator))
    x = torch.rot90(x, k, dims=(2, 3))
    if bool(torch.randint(2, (1,), generator=generator)):
        x = torch.flip(x, dims=(3,))
    return x


@torch.no_grad()
def accuracy(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    """Share of ``images`` whose arg-max logit equals ``labels``."""
    model.eval()
    predicted = torch.cat(
        [model(torch.from_numpy(images[i : i + 256])).argmax(1) for i in range(0, len(images), 256)]
    )
    return float((predicted.numpy() == labels).mean())


def training_images(train_size: int, single_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The training images and labels: seed 0 single-instance, seed 1 with 1 to 4 instances."""
    # Single-instance images are the harder ones (one shape to see): over-sample them.
    n_single = round(single_fraction * train_size)
    parts = [
        generate_shapes(n_single, TRAIN_SEED, instances=1),
        generate_shapes(train_size - n_single, TRAIN_SEED + 1, instances=(1, 4)),
    ]
    return (
        np.concatenate([p.images for p in parts]),
        np.concatenate([p.labels for p in parts]),
    )


def train_fc_head(args: argparse.Namespace) -> None:
    """Train :class:`DemoCNNFC`'s head on fixed DemoCNN features; write the whole model."""
    start = time.perf_counter()
    images, labels = training_images(args.train_size, args.single_fraction)
    print(f"generated {args.train_size} training images in {time.perf_counter() - start:.0f} s")
    model = DemoCNNFC().eval()
    model.features.load_state_dict(load_demo_model("gap").features.state_dict())
    generator = torch.Generator().manual_seed(1)
    views, view_labels = [], []
    with torch.no_grad():
        for view in range(args.views):
            for lo in range(0, len(images), 500):
                x = torch.from_numpy(images[lo : lo + 500])
                if view > 0:  # the first view is the image itself
                    x = augment(x, generator)
                views.append(model.pooled(model.features(x)))
                view_labels.append(torch.from_numpy(labels[lo : lo + 500]))
            print(f"features of view {view + 1}/{args.views}: {time.perf_counter() - start:.0f} s")
    x_all, y_all = torch.cat(views), torch.cat(view_labels)

    single = generate_shapes(args.eval_size, EVAL_SEED, instances=1)
    multi = generate_shapes(args.eval_size, EVAL_SEED + 1, instances=(2, 4))
    head = model.classifier
    optimiser = torch.optim.AdamW(head.parameters(), lr=args.lr, weight_decay=1e-2)
    per_epoch = len(x_all) // args.batch_size
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, args.lr, total_steps=args.epochs * per_epoch, pct_start=0.1
    )
    for epoch in range(args.epochs):
        head.train()
        order = torch.randperm(len(x_all), generator=generator)
        total = 0.0
        for b in range(per_epoch):
            idx = order[b * args.batch_size : (b + 1) * args.batch_size]
            inputs = F.dropout(x_all[idx], p=args.dropout, training=True)
            loss = F.cross_entropy(head(inputs), y_all[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item()
        model.eval()
        print(
            f"epoch {epoch + 1}/{args.epochs}  loss {total / per_epoch:.4f}  "
            f"{time.perf_counter() - start:.0f} s  held-out accuracy (first 300) "
            f"{accuracy(model, single.images[:300], single.labels[:300]):.3f} (1 instance), "
            f"{accuracy(model, multi.images[:300], multi.labels[:300]):.3f} (2-4)",
            flush=True,
        )
    out = args.out or FC_WEIGHTS_PATH
    save_weights(model, out)
    print(
        f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB) "
        f"after {time.perf_counter() - start:.0f} s"
    )
    print(
        f"held-out accuracy, 1 instance:    {accuracy(model, single.images, single.labels):.4f}"
        f" ({args.eval_size} images)"
    )
    print(
        f"held-out accuracy, 2-4 instances: {accuracy(model, multi.images, multi.labels):.4f}"
        f" ({args.eval_size} images)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--head", choices=("gap", "fc"), default="gap")
    parser.add_argument("--train-size", type=int, default=12000)
    parser.add_argument("--epochs", type=int, default=None, help="default: 8 (gap), 20 (fc)")
    parser.add_argument("--views", type=int, default=3, help="fc: augmented views per image")
    parser.add_argument("--dropout", type=float, default=0.2, help="fc: on the head's input")
    parser.add_argument("--single-fraction", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=None, help="default: 32 (gap), 64 (fc)")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--eval-size", type=int, default=1000, help="per instance group")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=None, help="default: the package's file")
    args = parser.parse_args()
    fc = args.head == "fc"
    args.epochs = args.epochs or (20 if fc else 8)
    args.batch_size = args.batch_size or (64 if fc else 32)

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(0)
    if fc:
        train_fc_head(args)
        return
    args.out = args.out or WEIGHTS_PATH
    start = time.perf_counter()

    images, labels = training_images(args.train_size, args.single_fraction)
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels)
    print(f"generated {args.train_size} training images in {time.perf_counter() - start:.0f} s")

    single = generate_shapes(args.eval_size, EVAL_SEED, instances=1)
    multi = generate_shapes(args.eval_size, EVAL_SEED + 1, instances=(2, 4))

    model = DemoCNN(batch_norm=True)
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * (args.train_size // args.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, args.lr, total_steps=steps, pct_start=0.1
    )
    generator = torch.Generator().manual_seed(1)
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(args.train_size, generator=generator)
        total = 0.0
        for b in range(args.train_size // args.batch_size):
            idx = order[b * args.batch_size : (b + 1) * args.batch_size]
            loss = F.cross_entropy(model(augment(x_all[idx], generator)), y_all[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item()
            if (b + 1) % 40 == 0:
                print(f"  step {b + 1}  mean loss {total / (b + 1):.4f}", flush=True)
        mean_loss = total / (args.train_size // args.batch_size)
        elapsed = time.perf_counter() - start
        plain = fold_batch_norm(model.eval())
        save_weights(plain, args.out)
        print(
            f"epoch {epoch + 1}/{args.epochs}  loss {mean_loss:.4f}  {elapsed:.0f} s  held-out "
            f"accuracy (first 300) {accuracy(plain, single.images[:300], single.labels[:300]):.3f}"
            f" (1 instance), {accuracy(plain, multi.images[:300], multi.labels[:300]):.3f} (2-4)",
            flush=True,
        )
    train_seconds = time.perf_counter() - start

    model = fold_batch_norm(model.eval())
    size_kb = args.out.stat().st_size / 1024
    print(f"wrote {args.out} ({size_kb:.0f} KiB) after {train_seconds:.0f} s")

    acc_single = accuracy(model, single.images, single.labels)
    acc_multi = accuracy(model, multi.images, multi.labels)
    print(f"held-out accuracy, 1 instance:    {acc_single:.4f} ({args.eval_size} images)")
    print(f"held-out accuracy, 2-4 instances: {acc_multi:.4f} ({args.eval_size} images)")


if __name__ == "__main__":
    main()
