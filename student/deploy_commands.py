"""The student's deployment commands: `student export` (ONNX), `student build-engine`
(TensorRT) and `student bench` (speed); ``edgedepth.student.commands`` adds them to its group."""

from __future__ import annotations

from pathlib import Path

import click

from edgedepth.common import POSITIVE, Unavailable, friendly_errors, one_size


def _csv(value: str) -> tuple[str, ...]:
    """`"L, M,,S"` -> ("L", "M", "S")."""
    return tuple(v.strip() for v in value.split(",") if v.strip())


@click.command("export")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Export folder.")
@click.option("--variants", default="L,M,S,XS", show_default=True, help="Comma-separated variants.")
@click.option("--size", default="480x320", show_default=True, callback=one_size, metavar="WxH")
@click.option("--target", type=click.Choice(["trt8", "trt10"]), default="trt10", show_default=True)
@click.option("--precision", default="fp32", show_default=True, help="Comma-separated: fp32, fp16, int8.")
@click.option("--calib-labels", type=click.Path(path_type=Path), help="Label folder for INT8 calibration.")
@click.option(
    "--calib-frames",
    default=64,
    show_default=True,
    type=click.IntRange(1, 4096),
    help="INT8 calibration frames.",
)
@click.option("--with-seg", is_flag=True, help="Also output the class map.")
@click.option("--input-dtype", type=click.Choice(["uint8", "float32"]), help="Default: per target.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@friendly_errors
def student_export(
    checkpoint,
    out_dir,
    variants,
    size,
    target,
    precision,
    calib_labels,
    calib_frames,
    with_seg,
    input_dtype,
    progress,
) -> None:
    """ONNX files for TensorRT 8.2 (Jetson TX2) or 10/11, FP32/FP16/INT8, checked against PyTorch."""
    from edgedepth.student.deploy import export_onnx

    manifest = export_onnx(
        checkpoint,
        out_dir,
        variants=_csv(variants),
        size=size,
        target=target,
        precisions=_csv(precision),
        with_seg=with_seg,
        calib_labels=calib_labels,
        calib_frames=calib_frames,
        input_dtype=input_dtype,
        progress=progress,
    )
    click.echo(manifest.format_table())


@click.command("build-engine")
@click.argument("onnx_path", type=click.Path(path_type=Path))
@click.option("--out", "out_path", required=True, type=click.Path(path_type=Path), help="Engine file.")
@click.option("--fp16", is_flag=True, help="FP16 builder flag (TensorRT 8/10).")
@click.option("--int8", is_flag=True, help="INT8: Q/DQ in the file, or calibrate from --calib-labels.")
@click.option("--calib-labels", type=click.Path(path_type=Path), help="Label folder for the calibrator.")
@click.option("--calib-frames", default=64, show_default=True, type=click.IntRange(1, 4096))
@click.option(
    "--workspace",
    "workspace_mb",
    default=1024,
    show_default=True,
    type=POSITIVE,
    help="Builder workspace (MB).",
)
@friendly_errors
def student_build_engine(onnx_path, out_path, fp16, int8, calib_labels, calib_frames, workspace_mb) -> None:
    """Build a TensorRT engine from an exported ONNX file (needs tensorrt and a GPU).

    Without them: one line saying so, with the trtexec command to run on the device; exit status 3.
    """
    from edgedepth.student.deploy import EngineBuildError, TensorRTUnavailable, build_engine

    try:
        report = build_engine(
            onnx_path,
            out_path,
            fp16=fp16,
            int8=int8,
            calib_labels=calib_labels,
            calib_frames=calib_frames,
            workspace_mb=workspace_mb,
            log=click.echo,
        )
    except TensorRTUnavailable as err:
        raise Unavailable(str(err)) from None
    except EngineBuildError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"wrote {report.path}")


@click.command("bench")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--variants", default="L,M,S,XS", show_default=True, help="Comma-separated variants.")
@click.option("--size", default="480x320", show_default=True, callback=one_size, metavar="WxH")
@click.option(
    "--backends", default="torch,onnxruntime", show_default=True, help="torch, onnxruntime, tensorrt."
)
@click.option("--precision", default="fp32", show_default=True, help="Comma-separated: fp32, fp16, int8.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--threads", type=click.IntRange(1, 1024), help="CPU threads (default: all cores).")
@click.option(
    "--repeats",
    default=50,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Timed runs per row (after warm-up).",
)
@click.option("--calib-labels", type=click.Path(path_type=Path), help="Label folder for INT8 calibration.")
@click.option("--out", "out_json", default="bench.json", show_default=True, type=click.Path(path_type=Path))
@friendly_errors
def student_bench(
    source, variants, size, backends, precision, device, threads, repeats, calib_labels, out_json
) -> None:
    """Latency and frames per second per variant, backend and precision (the paper's Table VI).

    SOURCE is a student checkpoint (exported on the fly) or an export folder. Writes bench.json and
    a PNG chart beside it; backends that are not installed are listed as such.
    """
    from edgedepth.common import check_writable, resolve_device
    from edgedepth.student.deploy import bench_variants

    for path in (out_json, Path(out_json).with_suffix(".png")):
        check_writable(path)  # before the work, not after it
    result = bench_variants(
        source,
        variants=_csv(variants),
        size=size,
        backends=_csv(backends),
        precisions=_csv(precision),
        device=resolve_device(device),
        threads=threads,
        repeats=repeats,
        calib_labels=calib_labels,
        progress=True,
    )
    click.echo(result.format_table())
    result.save_json(out_json)
    chart = Path(out_json).with_suffix(".png")
    result.plot(chart)
    click.echo(f"wrote {out_json} and {chart}")


__all__ = ["student_bench", "student_build_engine", "student_export"]
