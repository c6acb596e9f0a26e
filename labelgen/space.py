"""The one line for a run stopped by the machine (a full disk, a read-only folder): which file
system, how much is free and how much more the remaining shards need."""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgedepth.labelgen.folder import LabelFolder
    from edgedepth.labelgen.plan import ShardPlan


def mount_point(path: str | Path) -> Path:
    """The mount point of the file system holding ``path`` (or its nearest existing parent)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    device = path.stat().st_dev
    while path != path.parent and path.parent.stat().st_dev == device:
        path = path.parent
    return path


def free_bytes(path: str | Path) -> int:
    st = os.statvfs(mount_point(path))
    return st.f_bavail * st.f_frsize


def megabytes(n: float) -> str:
    return f"{n / 2**20:,.1f} MB" if n < 2**30 else f"{n / 2**30:,.2f} GB"


def bytes_per_frame(folder: LabelFolder, stage: str) -> float:
    """Mean size per frame of the stage's shard files on disk (0 when there is none to measure)."""
    sizes, frames = 0, 0
    for shard in folder.plan.shards:
        path = folder.shard_path(stage, shard)
        if path.is_file():
            sizes += path.stat().st_size
            frames += len(shard.frame_ids)
    return sizes / frames if frames else 0.0


def out_of_space(
    result: dict[str, Any],
    folder: LabelFolder,
    stage: str,
    shard: ShardPlan,
    left: Sequence[tuple[str, ShardPlan]],
) -> OSError:
    """The ``OSError`` that ends a run whose task hit an OS fault (``result`` from
    ``process_shard``): for a full disk it names the file system, what is free, and about how much
    the ``left`` shards still need (measured from the shards on disk)."""
    target = folder.shard_path(stage, shard)
    code = result.get("errno") or errno.EIO
    if code not in (errno.ENOSPC, errno.EDQUOT):
        reason = str(result.get("error", "")).split(": ")[-1] or os.strerror(code)
        return OSError(code, f"{reason}; {len(left)} shard(s) not written, rerun once fixed", str(target))
    where = mount_point(target)
    per_frame = {s: bytes_per_frame(folder, s) for s in {s for s, _ in left}}  # one pass a stage
    need = sum(per_frame[s] * len(sh.frame_ids) for s, sh in left)
    needed = f"about {megabytes(need)} more needed for" if need else "space needed for"
    return OSError(
        code,
        f"{os.strerror(code)} on the file system at {where} ({megabytes(free_bytes(where))} free; "
        f"{needed} {len(left)} shard(s)); free space, then rerun `edgedepth labelgen run` to resume",
        str(target),
    )


__all__ = ["free_bytes", "mount_point", "out_of_space"]
