"""The `edgedepth` command line: one group per pipeline wing, one command per stage.

This module only parses options and calls library functions; everything here is callable from
Python (see README.md). Errors from the library (ValueError, FileNotFoundError) become one-line
messages and exit code 2 rather than tracebacks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import click

try:
    __version__ = version("edgedepth")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

VARIANT_NAMES = ("L", "M", "S", "XS")


class InputError(click.ClickException):
    """Bad input named by the library: printed as one `Error: ...` line, exit status 2."""

    exit_code = 2


def _friendly_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the library's input errors (ValueError, FileNotFoundError) into :class:`InputError`."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (ValueError, FileNotFoundError) as err:
            raise InputError(str(err)) from None

    return wrapper


def _parse_size(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple:
    """`1056x320` (W x H, as the paper writes sizes) -> (height, width)."""
    sizes = []
    for value in values:
        try:
            width, height = (int(v) for v in value.lower().split("x"))
        except ValueError:
            raise click.BadParameter(f"{value!r} is not WIDTHxHEIGHT, e.g. 1056x320") from None
        sizes.append((height, width))
    return tuple(sizes)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgedepth")
def main() -> None:
    """edgedepth: KITTI teacher labels -> LiDAR bias table -> 0.32 M-parameter student -> edge GPU."""


@main.group(short_help="Teacher labels from KITTI logs.")
def labelgen() -> None:
    """Teacher labels from KITTI raw logs: plan shards, run teachers on dask, inspect HDF5 shards."""


@main.group(short_help="Teacher-vs-LiDAR depth bias table.")
def calib() -> None:
    """The per-distance teacher-vs-LiDAR depth bias look-up table: fit, apply, plot."""


@main.group(short_help="The student network: summary, benchmarks.")
def student() -> None:
    """The depth + segmentation student: summary, training, evaluation, export, benchmarks."""


def _summary_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--variant",
            "variants",
            multiple=True,
            type=click.Choice(VARIANT_NAMES, case_sensitive=False),
            help="Variant(s) to list (default: all).",
        ),
        click.option(
            "--size",
            "sizes",
            multiple=True,
            callback=_parse_size,
            metavar="WxH",
            help="Input size(s), width x height (default: 480x320 and 1056x320).",
        ),
        click.option("--num-classes", default=19, show_default=True, help="Segmentation classes."),
        click.option("--no-seg", is_flag=True, help="Depth-only model (no segmentation head)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@student.command("summary")
@_summary_options
@click.option("--latency", is_flag=True, help="Also measure the median latency (batch 1, eager).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto (for --latency).")
@click.option("--repeats", default=20, show_default=True, help="Timed runs per row (for --latency).")
@_friendly_errors
def student_summary(variants, sizes, num_classes, no_seg, latency, device, repeats) -> None:
    """Parameters, multiply-adds and output size of each student variant."""
    from student.bench import DEFAULT_SIZES, format_table, resolve_device, summarize_variants

    rows = summarize_variants(
        variants or VARIANT_NAMES,
        sizes or DEFAULT_SIZES,
        num_classes,
        not no_seg,
        latency=latency,
        device=resolve_device(device),
        repeats=repeats,
    )
    click.echo(format_table(rows))


@main.command(short_help="Run the pipeline on the embedded sample data.")
@_friendly_errors
def demo() -> None:
    """Run the pipeline on the embedded sample data (for now: the student's summary table)."""
    from student.bench import DEFAULT_SIZES, format_table, summarize_variants

    click.echo("edgedepth student variants (multi-task: depth + 19 Cityscapes classes)\n")
    click.echo(format_table(summarize_variants(VARIANT_NAMES, DEFAULT_SIZES)))
    click.echo("\nMACs: multiply-adds of one inference pass (torch.utils.flop_counter, convolutions only).")


if __name__ == "__main__":
    main()
