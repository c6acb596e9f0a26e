"""Training throughput: images per second the student trains on, and what the data loader delivers.

Rows:
- ``train <device>``: optimiser steps of the L student at 1056x320, batch 8, multi-scale multi-task
  loss (images already in memory, so this is what training *consumes*); CPU, and CUDA when present
  (also with --amp there).
- ``loader, N workers``: `edgedepth.student.train.data.LabelDataset` through a DataLoader with the training sampler
  and augmentation on, N = 0, 1, 2 (HDF5 read + gzip decode + resize + jitter + collate).
Target: the loader delivers at least 3x what training consumes on the same machine.

Labels are made with `labelgen` (images, lidar, sgbm) from copies of the real KITTI sample frame
($EDGEDEPTH_KITTI_SAMPLE) when it is there, else synthetic KITTI-size frames.
Run: `.venv/bin/python benchmarks/train_throughput.py [--steps 3] [--batches 10]`.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import click
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from labelgen_throughput import build_tree  # noqa: E402  (the same KITTI frames as the labelgen benchmark)

from edgedepth.common.memory import keep_freed_memory  # noqa: E402
from edgedepth.labelgen.plan import plan_shards, write_plan  # noqa: E402
from edgedepth.labelgen.run import run_stages  # noqa: E402
from edgedepth.student.model.config import ModelConfig  # noqa: E402
from edgedepth.student.train.data import LabelDataset  # noqa: E402
from edgedepth.student.train.losses import MultiScaleLoss  # noqa: E402
from edgedepth.student.train.sampler import EpochSampler  # noqa: E402

SIZE = (320, 1056)
BATCH = 8


def train_rate(device: str, steps: int, amp: bool = False) -> float:
    """Images per second of training steps (forward, loss, backward, Adam) after one warm-up step."""
    torch.manual_seed(0)
    model = ModelConfig(input_size=SIZE).build().to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    loss_fn = MultiScaleLoss()
    images = torch.randn(BATCH, 3, *SIZE, device=device)
    depth = torch.rand(BATCH, *SIZE, device=device) * 70 + 1
    labels = torch.randint(0, 19, (BATCH, *SIZE), device=device)
    dtype = torch.float16 if device == "cuda" else torch.bfloat16
    scaler = torch.amp.GradScaler(device, enabled=amp and device == "cuda")

    def step() -> None:
        with torch.autocast(device, dtype=dtype, enabled=amp):
            outputs = model(images)
        loss = loss_fn(outputs, depth, labels).total
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    step()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * BATCH / (time.perf_counter() - start)


def loader_rate(labels: Path, workers: int, batches: int) -> float:
    """Images per second the training DataLoader yields, after its first batch (worker start-up)."""
    data = LabelDataset(labels, "sgbm", seg=None, size=SIZE, augment=True, depth_range=(1.0, 80.0))
    sampler = EpochSampler(len(data), batches + 1, BATCH, seed=0)
    loader = iter(DataLoader(data, batch_size=BATCH, sampler=sampler, num_workers=workers))
    next(loader)
    start = time.perf_counter()
    for _ in range(batches):
        next(loader)
    return batches * BATCH / (time.perf_counter() - start)


def write_chart(rows: list[tuple[str, float]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.5 * len(rows) + 1.2))
    names, rates = [r[0] for r in rows], [r[1] for r in rows]
    ax.barh(names, rates, color=["tab:red" if n.startswith("train") else "tab:blue" for n in names])
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("images per second (log)")
    ax.set_title("student training at 1056x320, batch 8: consumption vs loader")
    for y, rate in enumerate(rates):
        ax.text(rate, y, f" {rate:.1f}", va="center")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@click.command()
@click.option("--frames", default=16, show_default=True, help="KITTI frames in the label folder.")
@click.option("--steps", default=3, show_default=True, help="Timed training steps per row.")
@click.option("--batches", default=10, show_default=True, help="Timed loader batches per row.")
@click.option("--chart", default="benchmarks/out/train_throughput.png", show_default=True, type=Path)
def main(frames: int, steps: int, batches: int, chart: Path) -> None:
    keep_freed_memory()  # as `student train` does on CPU
    with tempfile.TemporaryDirectory() as tmp:
        root, labels = Path(tmp) / "kitti", Path(tmp) / "labels"
        source = build_tree(root, frames)
        write_plan(plan_shards(root, shard_size=8), labels)
        run_stages(labels, ["images", "lidar", "sgbm"], workers=2, progress=False)
        rows = [("train cpu", train_rate("cpu", steps))]
        if torch.cuda.is_available():
            rows += [
                ("train cuda", train_rate("cuda", steps * 10)),
                ("train cuda amp", train_rate("cuda", steps * 10, True)),
            ]
        rows += [(f"loader, {w} workers", loader_rate(labels, w, batches)) for w in (0, 1, 2)]
    consumed = {name: rate for name, rate in rows if name.startswith("train")}
    print(
        f"{frames} {source}, L student at {SIZE[1]}x{SIZE[0]}, batch {BATCH}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads\n"
    )
    print(f"{'row':<18} {'images/s':>9} " + " ".join(f"{'x ' + k:>13}" for k in consumed))
    print("-" * (29 + 14 * len(consumed)))
    for name, rate in rows:
        ratios = " ".join(f"{rate / c:13.1f}" for c in consumed.values())
        print(f"{name:<18} {rate:9.2f} {ratios}")
    print(f"\nwrote {write_chart(rows, chart)}")


if __name__ == "__main__":
    main()
