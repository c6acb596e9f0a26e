"""What an ONNX file holds, read with the onnx package (no TensorRT, no runtime): Q/DQ nodes
(explicit INT8), FP16 tensors (an AutoCast copy) and the graph inputs' shapes and types."""

from __future__ import annotations

from pathlib import Path
from typing import Any

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


def _load_onnx(path: str | Path) -> Any:
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ONNX file")
    return onnx.load(str(path), load_external_data=False)


def _all_nodes(graph: Any) -> list[Any]:
    nodes = []
    for node in graph.node:
        nodes.append(node)
        for attribute in node.attribute:
            if attribute.g is not None and len(attribute.g.node):
                nodes.extend(_all_nodes(attribute.g))
            for sub in attribute.graphs:
                nodes.extend(_all_nodes(sub))
    return nodes


def onnx_has_qdq(path: str | Path) -> bool:
    """True when the ONNX file has QuantizeLinear/DequantizeLinear nodes (explicit quantization)."""
    return any(node.op_type in QDQ_OPS for node in _all_nodes(_load_onnx(path).graph))


def onnx_has_fp16(path: str | Path) -> bool:
    """True when the ONNX file holds FP16 tensors (initializers, I/O, value_info or Cast-to-FP16)."""
    import onnx

    graph = _load_onnx(path).graph
    fp16 = onnx.TensorProto.FLOAT16
    if any(init.data_type == fp16 for init in graph.initializer):
        return True
    values = list(graph.input) + list(graph.output) + list(graph.value_info)
    if any(value.type.tensor_type.elem_type == fp16 for value in values):
        return True
    for node in _all_nodes(graph):
        if node.op_type == "Cast" and any(a.name == "to" and a.i == fp16 for a in node.attribute):
            return True
    return False


def onnx_inputs(path: str | Path) -> dict[str, tuple[tuple[int | None, ...], str]]:
    """The graph inputs (initializers excluded): name -> (shape with None for dynamic dims, dtype)."""
    import onnx

    graph = _load_onnx(path).graph
    initializers = {init.name for init in graph.initializer}
    inputs = {}
    for value in graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dims = tuple(
            d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim
        )
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name if tensor.elem_type else "float32"
        inputs[value.name] = (dims, dtype)
    return inputs


__all__ = ["QDQ_OPS", "onnx_has_fp16", "onnx_has_qdq", "onnx_inputs"]
