"""The `edgedepth` command line: one group per pipeline wing, one command per stage.

Each wing brings its own commands (``edgedepth.labelgen.commands``, ``.data_commands``,
``edgedepth.calib.commands``, ``edgedepth.student.commands``, ``edgedepth.demo.commands``); this
module only assembles them under ``main``. Commands only parse options and call library functions;
everything is callable from Python (see README.md). Errors become one `Error:` line naming the
file and the problem, never a traceback (``edgedepth.common.cli_options``). Exit statuses: 0 done;
1 some frames failed (`labelgen run`); 2 bad usage or bad input; 3 a backend this machine lacks
(TensorRT, a GPU); 4 an OS fault (disk full, permission denied, read-only folder, a path under a
file).
"""

from __future__ import annotations

import click

from edgedepth.calib import calib_group
from edgedepth.common import __version__
from edgedepth.demo import demo_command
from edgedepth.labelgen import data_group, labelgen_group
from edgedepth.student import labelgen_score, student_group


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgedepth")
def main() -> None:
    """edgedepth: KITTI teacher labels -> LiDAR bias table -> 0.32 M-parameter student -> edge GPU."""


labelgen_group.add_command(labelgen_score)  # scores with the student's evaluation: labelgen may not import it
for _command in (labelgen_group, data_group, calib_group, student_group, demo_command):
    main.add_command(_command)

__all__ = ["main"]

if __name__ == "__main__":
    main()
