"""Cost of checking existing shards: ``check_shard(verify="quick")`` vs ``verify="full"``.

``quick`` opens the shard and reads its attributes and bookkeeping datasets; ``full`` also reads
(and so decompresses and checksums) every chunk of every dataset. This is what every resume,
``labelgen inspect`` and ``labelgen run --verify`` pay per shard. Labels are made with `labelgen`
(images, lidar, sgbm) from copies of the real KITTI sample frame ($EDGEDEPTH_KITTI_SAMPLE) when it
is there, else synthetic KITTI-size frames; the page cache is warm (the shards were just written),
which is the common case on a resume; a cold read adds the disk's time for the shard's bytes.

Run: `.venv/bin/python benchmarks/verify_cost.py [--frames 32]`; prints a table.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parent))
from labelgen_throughput import build_tree  # noqa: E402  (the same KITTI frames as the labelgen benchmark)

from edgedepth.labelgen.plan import load_plan, plan_shards, write_plan  # noqa: E402
from edgedepth.labelgen.run import run_stages  # noqa: E402
from edgedepth.labelgen.shards import check_shard, shard_path  # noqa: E402

STAGES = ("images", "lidar", "sgbm")


@click.command()
@click.option("--frames", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--repeats", default=5, show_default=True, type=click.IntRange(min=1))
def main(frames: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root, labels = Path(tmp) / "kitti", Path(tmp) / "labels"
        source = build_tree(root, frames)
        write_plan(plan_shards(root, shard_size=frames), labels)
        run_stages(labels, list(STAGES), workers=2, progress=False)
        plan = load_plan(labels)
        shard = plan.shards[0]
        print(f"one shard of {len(shard.frame_ids)} {source}; median of {repeats} checks, warm page cache\n")
        print(f"{'stage':<8} {'MB':>7} {'quick ms':>9} {'full ms':>9} {'full ms/frame':>14}")
        print("-" * 51)
        for stage in STAGES:
            path = shard_path(labels, stage, shard.name)
            times = {}
            for mode in ("quick", "full"):
                runs = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    status = check_shard(path, plan.plan_id, shard.frame_ids, verify=mode)
                    runs.append(time.perf_counter() - start)
                    assert status.complete, status
                times[mode] = statistics.median(runs) * 1000
            size = path.stat().st_size / 2**20
            per_frame = times["full"] / len(shard.frame_ids)
            print(f"{stage:<8} {size:7.1f} {times['quick']:9.1f} {times['full']:9.1f} {per_frame:14.2f}")


if __name__ == "__main__":
    main()
