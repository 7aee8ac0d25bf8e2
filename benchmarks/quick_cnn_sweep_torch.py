"""Narrow the search for quick-cnn's recipe on a GPU: a PyTorch port of the study's CNN and quick-cnn's recipe.

Many models train at once as one grouped network (each model its own seed, data order, peak learning rate, Adam
betas, weight decay and warm-up share), so a whole grid of recipes and seeds costs about as much as one run. The
port is only a guide: a recipe is chosen by `digits train quick-cnn --validation holdout --seed S` in Keras on the
CPU, never by this script. Every model trains on the first 50,000 training images and is scored on the holdout
(the last 10,000); the test set is never read. docs/speed.md ("Batch 512 for the CNN") quotes its figures: 8
seeds a setting on an NVIDIA H200, run as a compact copy of this file (the device took commands of 2,000
characters; the same math, with one random generator per group for the initial weights).

    python benchmarks/quick_cnn_sweep_torch.py --seeds 8 > sweep.csv
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import math
import sys
import time
from pathlib import Path

import numpy as np

MNIST_DIR = Path(__file__).parents[1] / "src" / "digits" / "mnist"
HOLDOUT_START = 50_000
SHIFT = 2  # quick-cnn's ±2 px random whole-pixel shifts


def read_idx(name: str, offset: int) -> np.ndarray:
    with gzip.open(MNIST_DIR / f"{name}.gz") as file:
        return np.frombuffer(file.read(), np.uint8, offset=offset)


def glorot(torch, shape, fan_in, fan_out, generator):
    limit = math.sqrt(6 / (fan_in + fan_out))
    return (torch.rand(shape, generator=generator, device="cpu") * 2 - 1) * limit


def train_group(torch, images, labels, configs, *, batch_schedule, device, train_count=HOLDOUT_START):
    """Train len(configs) models together; batch_schedule is one batch size per epoch. Returns holdout accuracies."""
    F = torch.nn.functional
    models = len(configs)
    generator = torch.Generator().manual_seed(1234 + sum(c["seed"] for c in configs))
    # Keras's defaults: glorot-uniform kernels, zero biases.
    conv1 = torch.stack([glorot(torch, (32, 1, 3, 3), 9, 288, torch.Generator().manual_seed(c["seed"] * 7 + 1))
                         for c in configs]).reshape(models * 32, 1, 3, 3)
    conv2 = torch.stack([glorot(torch, (64, 32, 3, 3), 288, 576, torch.Generator().manual_seed(c["seed"] * 7 + 2))
                         for c in configs]).reshape(models * 64, 32, 3, 3)
    dense = torch.stack([glorot(torch, (1600, 10), 1600, 10, torch.Generator().manual_seed(c["seed"] * 7 + 3))
                         for c in configs])
    params = [conv1, torch.zeros(models * 32), conv2, torch.zeros(models * 64), dense, torch.zeros(models, 10)]
    params = [p.to(device).requires_grad_() for p in params]
    # Per-model hyper-parameters, broadcast over each parameter's model axis.
    per_model = {key: torch.tensor([float(c[key]) for c in configs], device=device)
                 for key in ("lr", "beta_1", "beta_2", "weight_decay", "warmup")}
    shapes = [(models, 32, 1, 3, 3), (models, 32), (models, 64, 32, 3, 3), (models, 64), (models, 1600, 10),
              (models, 10)]
    moments = [torch.zeros_like(p) for p in params]
    squares = [torch.zeros_like(p) for p in params]
    steps_per_epoch = [math.ceil(train_count / b) for b in batch_schedule]
    total_steps = sum(steps_per_epoch)
    train_images = images[:train_count]
    train_labels = labels[:train_count]
    step = 0
    positions = torch.arange(28, device=device)
    for batch in batch_schedule:
        order = torch.stack([torch.randperm(train_count, generator=generator) for _ in range(models)]).to(device)
        for first in range(0, train_count, batch):
            index = order[:, first:first + batch]  # (M, B)
            count = index.shape[1]
            x = train_images[index].float() / 255.0  # (M, B, 28, 28)
            # Random whole-pixel shifts, zeros shifted in.
            shifts = torch.randint(-SHIFT, SHIFT + 1, (models, count, 2), device=device)
            rows = positions[None, None, :] - shifts[..., 0:1]  # (M, B, 28)
            cols = positions[None, None, :] - shifts[..., 1:2]
            valid = ((rows >= 0) & (rows < 28))[..., :, None] & ((cols >= 0) & (cols < 28))[..., None, :]
            rows, cols = rows.clamp(0, 27), cols.clamp(0, 27)
            x = torch.gather(x, 2, rows[..., :, None].expand(-1, -1, -1, 28))
            x = torch.gather(x, 3, cols[..., None, :].expand(-1, -1, 28, -1)) * valid
            x = x.permute(1, 0, 2, 3)  # (B, M, 28, 28): each model a group of channels
            y = train_labels[index]  # (M, B)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                h = F.relu(F.conv2d(x, params[0], params[1], groups=models))
                h = F.max_pool2d(h, 2)
                h = F.relu(F.conv2d(h, params[2], params[3], groups=models))
                h = F.max_pool2d(h, 2)  # (B, M*64, 5, 5)
                h = h.reshape(count, models, 64 * 25).permute(1, 0, 2)  # (M, B, 1600)
                h = F.dropout(h, 0.5, training=True)
                logits = torch.einsum("mbf,mfc->mbc", h, params[4]) + params[5][:, None, :]
            loss = F.cross_entropy(logits.float().reshape(-1, 10), y.reshape(-1), reduction="sum") / count
            grads = torch.autograd.grad(loss, params)
            step += 1
            fraction = step / total_steps
            warm = per_model["warmup"]
            # One-cycle: linear warm-up to the peak over `warmup` of the steps, linear decay to 0 at the last step.
            scale = torch.where(fraction < warm, fraction / warm, (1 - fraction) / (1 - warm)).clamp(min=0)
            lr = per_model["lr"] * scale
            b1, b2 = per_model["beta_1"], per_model["beta_2"]
            with torch.no_grad():
                for i, (p, g) in enumerate(zip(params, grads, strict=True)):
                    def axis(values, shape=shapes[i]):
                        return values.reshape(models, *([1] * (len(shape) - 1)))

                    pv, gv = p.view(shapes[i]), g.view(shapes[i])
                    m, v = moments[i].view(shapes[i]), squares[i].view(shapes[i])
                    m.mul_(axis(b1)).add_((1 - axis(b1)) * gv)
                    v.mul_(axis(b2)).add_((1 - axis(b2)) * gv * gv)
                    corrected = axis(lr * torch.sqrt(1 - b2 ** step) / (1 - b1 ** step))
                    pv.sub_(corrected * m / (torch.sqrt(v) + 1e-7) + axis(lr * per_model["weight_decay"]) * pv)
    # Score the holdout, 1,000 images at a time (all models at once would pass 2**31 elements in a convolution).
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        chunks = []
        for first in range(HOLDOUT_START, len(images), 1000):
            x = (images[first:first + 1000].float()[:, None] / 255.0).expand(-1, models, -1, -1)  # (n, M, 28, 28)
            h = F.max_pool2d(F.relu(F.conv2d(x, params[0], params[1], groups=models)), 2)
            h = F.max_pool2d(F.relu(F.conv2d(h, params[2], params[3], groups=models)), 2)
            h = h.reshape(len(x), models, 1600).permute(1, 0, 2)
            chunks.append(torch.einsum("mbf,mfc->mbc", h, params[4]) + params[5][:, None, :])
        logits = torch.cat(chunks, 1)
        correct = (logits.argmax(-1) == labels[HOLDOUT_START:][None]).float().mean(1)
    return correct.cpu().numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--train-count", type=int, default=HOLDOUT_START, help="fewer images for a smoke test")
    parser.add_argument("--budget", type=float, default=360, help="stop starting groups after this many seconds")
    arguments = parser.parse_args()
    try:
        import torch
    except ImportError as error:
        sys.exit(f"PyTorch is not installed here ({error}); nothing to sweep.")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"# torch {torch.__version__} on {device}", file=sys.stderr)
    torch.backends.cudnn.benchmark = True
    images = torch.from_numpy(read_idx("train-images-idx3-ubyte", 16).reshape(-1, 28, 28).copy()).to(device)
    labels = torch.from_numpy(read_idx("train-labels-idx1-ubyte", 8).astype(np.int64)).to(device)
    seeds = range(arguments.seeds)

    def configs(lrs, betas=((0.9, 0.999),), decays=(0.0,), warmups=(0.2,)):
        return [dict(lr=lr, beta_1=b1, beta_2=b2, weight_decay=wd, warmup=w, seed=s)
                for lr, (b1, b2), wd, w, s in itertools.product(lrs, betas, decays, warmups, seeds)]

    # (label, batch schedule, configs): the baseline first, then larger batches in less training time.
    groups = [
        ("b128x7", [128] * 7, configs([0.008])),
        ("b256x6", [256] * 6, configs([0.008, 0.012, 0.016])),
        ("b512x7", [512] * 7, configs([0.012, 0.016, 0.024])),
        ("b512x8", [512] * 8, configs([0.012, 0.016, 0.024])),
        ("b512x8", [512] * 8, configs([0.016], betas=((0.9, 0.99), (0.8, 0.99)))),
        ("b512x8", [512] * 8, configs([0.016], warmups=(0.1, 0.3))),
        ("grow512-256-128", [512] * 4 + [256] * 2 + [128], configs([0.016])),
        ("b512x10", [512] * 10, configs([0.024])),
    ]
    print("group,batches,lr,beta_1,beta_2,weight_decay,warmup,seeds,mean,min,max,seconds")
    start = time.perf_counter()
    for label, schedule, group in groups:
        if time.perf_counter() - start > arguments.budget:
            print(f"# out of time before {label}", file=sys.stderr)
            break
        began = time.perf_counter()
        scores = train_group(torch, images, labels, group, batch_schedule=schedule, device=device,
                             train_count=arguments.train_count)
        seconds = time.perf_counter() - began
        def settings_of(pair):
            return tuple((name, value) for name, value in pair[0].items() if name != "seed")

        for key, members in itertools.groupby(zip(group, scores, strict=True), key=settings_of):
            values = np.array([score for _, score in members])
            settings = dict(key)
            print(f"{label},{'/'.join(map(str, schedule))},{settings['lr']},{settings['beta_1']},{settings['beta_2']},"
                  f"{settings['weight_decay']:.4g},{settings['warmup']},{len(values)},{values.mean():.5f},"
                  f"{values.min():.4f},{values.max():.4f},{seconds:.1f}", flush=True)


if __name__ == "__main__":
    main()
