"""What every wing's commands share: the error-to-one-line handling, option types and decorators.

Errors become one `Error:` line naming the file and the problem, never a traceback. Exit statuses:
2 bad usage or bad input (:class:`InputError`); 3 a backend this machine lacks (:class:`Unavailable`);
4 an OS fault (:class:`SystemFault`: disk full, permission denied, read-only folder, a path under a
file). Only click is imported here, so ``edgedepth --help`` stays fast.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import click

from edgedepth.common.errors import describe, is_os_fault


class InputError(click.ClickException):
    """Bad input named by the library: printed as one `Error: ...` line, exit status 2."""

    exit_code = 2


class Unavailable(click.ClickException):
    """A backend this machine lacks (TensorRT, a GPU): one `Error: ...` line, exit status 3."""

    exit_code = 3


class SystemFault(click.ClickException):
    """The machine's fault (disk full, permission denied, read-only): one `Error:` line, exit status 4."""

    exit_code = 4


def friendly_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the library's errors into one `Error:` line: bad input (ValueError, a missing file) is
    :class:`InputError`, an OS fault (``edgedepth.common.errors.is_os_fault``) :class:`SystemFault`."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except OSError as err:
            raise (SystemFault if is_os_fault(err) else InputError)(describe(err)) from None
        except (ValueError, MemoryError) as err:
            raise InputError(describe(err) if str(err) else type(err).__name__) from None

    return wrapper


class FiniteFloatRange(click.FloatRange):
    """``click.FloatRange`` that also refuses NaN and infinity (NaN passes every range comparison)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


class UpperChoice(click.Choice):
    """``click.Choice`` of upper-case names that accepts any case (``l`` is ``L``) and shows, suggests
    and reports them in upper case: ``case_sensitive=False`` would show ``[l|m|s|xs]`` (click >= 8.2)."""

    def __init__(self, choices: Any) -> None:
        super().__init__([str(c).upper() for c in choices], case_sensitive=True)

    def normalize_choice(self, choice: object, ctx: click.Context | None) -> str:
        return super().normalize_choice(choice, ctx).upper()


VARIANT_NAMES = ("L", "M", "S", "XS")  # edgedepth.student.model.network.VARIANTS (not imported:
ARCH_NAMES = ("paper", "fast")  # .ARCHS; importing the network costs torch, `--help` stays fast)
POSITIVE = click.IntRange(min=1)
NON_NEGATIVE = click.IntRange(min=0)
METRES = FiniteFloatRange(min=0)
POSITIVE_METRES = FiniteFloatRange(min=0, min_open=True)
SHARE = FiniteFloatRange(0, 1, max_open=True)


def parse_size(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple:
    """`1056x320` (W x H, as the paper writes sizes) -> (height, width), for a repeatable option."""
    sizes = []
    for value in values:
        try:
            width, height = (int(v) for v in value.lower().split("x"))
        except ValueError:
            raise click.BadParameter(f"{value!r} is not WIDTHxHEIGHT, e.g. 1056x320") from None
        sizes.append((height, width))
    return tuple(sizes)


def one_size(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    """`1056x320` -> (height, width) for a single option; None when it is not given."""
    return parse_size(ctx, param, (value,))[0] if value else None


def cluster_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--cluster/--jobs/--job-option/--job-timeout/--dry-run: batch jobs through dask-jobqueue."""
    options = [
        click.option(
            "--cluster",
            type=click.Choice(["slurm", "pbs", "sge", "lsf", "htcondor"]),
            help="Run on batch jobs of this scheduler (dask-jobqueue; defaults from ~/.config/dask/jobqueue.yaml).",
        ),
        click.option(
            "--jobs",
            default=1,
            show_default=True,
            type=click.IntRange(min=1),
            help="--cluster: jobs to start.",
        ),
        click.option(
            "--job-option",
            "job_option",
            multiple=True,
            metavar="KEY=VALUE",
            help="--cluster: an option of the dask-jobqueue class, e.g. queue=gpu, cores=8, memory=64GB, "
            "walltime=04:00:00, job_extra_directives=--gres=gpu:1 (repeatable).",
        ),
        click.option(
            "--job-timeout",
            default=600.0,
            show_default=True,
            type=FiniteFloatRange(min=1),
            help="--cluster: seconds to wait for a first job to start.",
        ),
        click.option("--dry-run", is_flag=True, help="--cluster: print the job script and submit nothing."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


__all__ = [
    "ARCH_NAMES",
    "METRES",
    "NON_NEGATIVE",
    "POSITIVE",
    "POSITIVE_METRES",
    "SHARE",
    "VARIANT_NAMES",
    "FiniteFloatRange",
    "InputError",
    "SystemFault",
    "Unavailable",
    "UpperChoice",
    "cluster_options",
    "friendly_errors",
    "one_size",
    "parse_size",
]
