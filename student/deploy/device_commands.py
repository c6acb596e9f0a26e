"""Command lines for the device: ``trtexec`` to build and time an engine, ``polygraphy`` to compare
it with ONNX Runtime. ``build_engine`` names the trtexec line when it cannot build here; the export
writes each file's lines to ``<name>.commands.txt`` (docs/export.md, docs/tensorrt.md)."""

from __future__ import annotations

from pathlib import Path

INT8_COMPARE = "--check-error-stat mean --atol 0.25 --rtol 0.02"
"""polygraphy's test of an INT8 engine against ONNX Runtime running the same Q/DQ file."""
INT8_COMPARE_NOTE = "mean error within 0.25 m or 2 % (single pixels differ by rounding)"
"""Why the INT8 test is on the mean: ONNX Runtime runs the Q/DQ file as FP32 with rounding (fake
quantization), TensorRT in INT8 with fused layers, so the two round a few values differently and
single pixels of depth differ by more than the FP32 tolerances; a misplaced scale moves the mean."""


def trtexec_command(
    onnx_path: str | Path,
    out_path: str | Path,
    fp16: bool = False,
    int8: bool = False,
    generation: int | None = None,
    workspace_mb: int | None = None,
) -> str:
    """The ``trtexec`` line that builds the same engine on the device.

    ``generation`` None (TensorRT not importable here) gives the 8.x/10.x flags, which most devices
    (TX2: 8.2, Orin JP6: 10.3) take, and no workspace flag (no spelling works on both 8.2 and 10.x);
    11.x has no --fp16/--int8: it builds the file as typed.
    """
    parts = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={out_path}"]
    if generation == 11:
        parts.append("--stronglyTyped")
    else:
        parts += [flag for flag, on in (("--fp16", fp16), ("--int8", int8)) if on]
        if generation == 10 and not (fp16 or int8):
            parts.append("--stronglyTyped")
    if workspace_mb is not None and generation is not None:  # --workspace is 8.x only, --memPoolSize 8.4+
        parts.append(
            f"--workspace={workspace_mb}" if generation == 8 else f"--memPoolSize=workspace:{workspace_mb}"
        )
    return " ".join(parts)


def export_commands(
    name: str, target: str, precision: str, height: int, width: int, dtype: str, runtime: str = "any"
) -> list[str]:
    """trtexec lines to build and time an engine, polygraphy lines to compare it with ONNX Runtime."""
    stem = name.removesuffix(".onnx")
    shapes = f" --shapes=image:1x3x{height}x{width}" if target == "trt10" else ""
    poly = f"polygraphy run {name} --onnxrt --val-range image:[0,255]"
    if target == "trt10":
        poly += f" --input-shapes image:[1,3,{height},{width}]"
    if runtime == "onnxruntime":
        trt_name = name.replace("_int8_ort.onnx", "_int8.onnx")
        return [
            "# ONNX Runtime's CPU form of the INT8 copy (uint8 activations with zero points): TensorRT",
            f"# refuses it; build engines from {trt_name}. Time it on the CPU with:",
            f"edgedepth student bench EXPORT_DIR --backends onnxruntime --precision int8 --size {width}x{height}",
            f"polygraphy run {name} --onnxrt --val-range image:[0,255]"
            + (f" --input-shapes image:[1,3,{height},{width}]" if target == "trt10" else ""),
        ]
    trt = f"trtexec --onnx={name}"
    if precision == "fp32" and target == "trt8":
        return [
            "# TensorRT 8.2: fixed batch 1; FP16 is the builder flag",
            f"{trt} --saveEngine={stem}.engine",
            f"{trt} --saveEngine={stem.replace('_fp32', '_fp16')}.engine --fp16",
            f"{poly} --trt --atol 1e-4 --rtol 1e-4",
            f"{poly} --trt --fp16 --atol 0.5 --rtol 0.01",
        ]
    if precision == "fp32":
        return [
            "# TensorRT 10: FP32, or weakly typed FP16 with the builder flag; TensorRT 11: strongly typed FP32",
            f"{trt} --saveEngine={stem}.engine{shapes}",
            f"{trt} --saveEngine={stem.replace('_fp32', '_fp16flag')}.engine --fp16{shapes}",
            f"{trt} --saveEngine={stem}_trt11.engine --stronglyTyped{shapes}",
            f"{poly} --trt --atol 1e-4 --rtol 1e-4",
            f"{poly} --trt --fp16 --atol 0.5 --rtol 0.01",
        ]
    if precision == "fp16":
        return [
            "# TensorRT 10 / 11: FP16 inside the graph, FP32 I/O: build strongly typed",
            f"{trt} --saveEngine={stem}.engine --stronglyTyped{shapes}",
            f"{poly} --trt --strongly-typed --atol 0.5 --rtol 0.01",
        ]
    int8 = f"{poly} --trt --int8 {INT8_COMPARE}"
    if target == "trt8":
        return [
            "# TensorRT 8.2, Q/DQ file (explicit quantization: the scales are in the file, no calibration cache);",
            "# --int8 runs the quantized layers in INT8 and the rest in FP32, --int8 --fp16 the rest in FP16",
            f"{trt} --saveEngine={stem}.engine --int8",
            f"{trt} --saveEngine={stem}_fp16.engine --int8 --fp16",
            f"# the engine vs ONNX Runtime on the same Q/DQ file: {INT8_COMPARE_NOTE}",
            int8,
        ]
    return [
        "# Q/DQ file (explicit quantization: the scales are in the file, no calibration cache). TensorRT 10.x:",
        "# --int8 (the rest in FP32; --int8 --fp16: the rest in FP16); TensorRT 11 has no --int8: --stronglyTyped",
        f"{trt} --saveEngine={stem}.engine --int8{shapes}",
        f"{trt} --saveEngine={stem}_fp16.engine --int8 --fp16{shapes}",
        f"{trt} --saveEngine={stem}_trt11.engine --stronglyTyped{shapes}",
        f"# the engine vs ONNX Runtime on the same Q/DQ file: {INT8_COMPARE_NOTE}",
        int8,
        f"{poly} --trt --strongly-typed {INT8_COMPARE}",
    ]


__all__ = ["INT8_COMPARE", "export_commands", "trtexec_command"]
