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
@click.option(
    "--target",
    default="trt10",
    show_default=True,
    help="Comma-separated: trt8 (TensorRT 8.2, Jetson TX2), trt10 (TensorRT 10/11), openvino, litert.",
)
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
    """Files for TensorRT 8.2 / 10 (ONNX), OpenVINO (IR) and LiteRT (.tflite), FP32/FP16/INT8, each
    checked against PyTorch; one manifest.json describes them all."""
    from edgedepth.student.deploy import RuntimeMissing, export_student

    try:
        manifest = export_student(
            checkpoint,
            out_dir,
            targets=_csv(target),
            variants=_csv(variants),
            size=size,
            precisions=_csv(precision),
            with_seg=with_seg,
            calib_labels=calib_labels,
            calib_frames=calib_frames,
            input_dtype=input_dtype,
            progress=progress,
        )
    except RuntimeMissing as err:  # an optional runtime: one line with its pip command, exit status 3
        raise Unavailable(str(err)) from None
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
    "--backends",
    default="torch,onnxruntime",
    show_default=True,
    help="Comma-separated: torch, onnxruntime, openvino, litert, tensorrt.",
)
@click.option(
    "--precision",
    default="fp32",
    show_default=True,
    help="Comma-separated: fp32, fp16, int8, bf16 (bf16: OpenVINO's execution of the FP32 IR).",
)
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
@click.option(
    "--eval-root",
    type=click.Path(path_type=Path),
    help="Held-out data (rig or KITTI layout): adds each file's Abs Rel and RMSE against ground truth.",
)
@click.option("--eval-frames", type=click.Path(path_type=Path), help="Frame list of --eval-root.")
@click.option("--out", "out_json", default="bench.json", show_default=True, type=click.Path(path_type=Path))
@friendly_errors
def student_bench(
    source,
    variants,
    size,
    backends,
    precision,
    device,
    threads,
    repeats,
    calib_labels,
    eval_root,
    eval_frames,
    out_json,
) -> None:
    """Latency and frames per second per variant, backend and precision (the paper's Table VI),
    and with --eval-root the held-out accuracy of each file: speed at accuracy.

    SOURCE is a student checkpoint (exported on the fly) or an export folder. Writes bench.json,
    bench.md, a PNG chart and (with --eval-root) a Pareto PNG beside it; backends that are not
    installed are listed as such, with the pip line that installs them.
    """
    from edgedepth.common import check_writable, resolve_device
    from edgedepth.student.deploy import bench_variants, plot_pareto

    out_json = Path(out_json)
    pareto = out_json.with_name(out_json.stem + "_pareto.png")
    for path in (out_json, out_json.with_suffix(".png"), out_json.with_suffix(".md"), pareto):
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
        eval_root=eval_root,
        eval_frames=eval_frames,
    )
    click.echo(result.format_table())
    result.save_json(out_json)
    result.save_markdown(out_json.with_suffix(".md"))
    chart = out_json.with_suffix(".png")
    result.plot(chart)
    written = [out_json, out_json.with_suffix(".md"), chart]
    if result.has_accuracy():
        plot_pareto(result, pareto)
        written.append(pareto)
    click.echo("wrote " + ", ".join(str(p) for p in written))


__all__ = ["student_bench", "student_build_engine", "student_export"]
