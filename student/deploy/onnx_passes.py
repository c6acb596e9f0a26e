"""Graph rewrites of an exported student ONNX file that keep its outputs and its target's operator set.

``fold_pads_into_convs``: the Keras encoder style pads its five stride-2 convolutions by one zero row
below and one zero column right (``edgedepth.student.model.network.KerasPadConv2d``). The dynamo exporter (trt10)
writes that as the convolution's own ``pads=[0, 0, 1, 1]``; the legacy exporter (trt8, opset 13)
writes a ``Pad`` node fed by a chain of shape operators (ConstantOfShape, Reshape, Slice, Transpose)
that TensorRT 8.2's allow-list does not hold. The pass evaluates each Pad's pads once (they are
constants of the graph), moves zero spatial padding into the consuming Conv's ``pads`` attribute, and
drops the Pad and the chain that fed it: the same arithmetic, fewer operators.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper


def _consumers(graph: onnx.GraphProto, name: str) -> list[onnx.NodeProto]:
    return [node for node in graph.node if name in node.input]


def _attribute(node: onnx.NodeProto, name: str, default):
    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def _pad_values(model: onnx.ModelProto, pads: list[onnx.NodeProto]) -> dict[str, np.ndarray]:
    """Each Pad's ``pads`` input evaluated by ONNX Runtime (they depend on constants only)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    names = [node.input[1] for node in pads]
    known = {o.name for o in probe.graph.output}
    for name in names:
        if name not in known:
            probe.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.INT64, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {}
    for item in session.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in item.shape]
        dtype = np.uint8 if item.type == "tensor(uint8)" else np.float32
        feeds[item.name] = np.zeros(shape, dtype=dtype)
    values = session.run(names, feeds)
    return dict(zip(names, (np.asarray(v, dtype=np.int64) for v in values), strict=True))


def _zero_constant(graph: onnx.GraphProto, node: onnx.NodeProto) -> bool:
    """The Pad pads with zeros: mode constant and no (or an all-zero initializer) value input."""
    if _attribute(node, "mode", b"constant") not in (b"constant", "constant"):
        return False
    if len(node.input) < 3 or not node.input[2]:
        return True
    for init in graph.initializer:
        if init.name == node.input[2]:
            return not np.any(onnx.numpy_helper.to_array(init))
    return False


def _drop_dead_nodes(graph: onnx.GraphProto) -> None:
    """Remove nodes none of whose outputs is used by another node or the graph's outputs."""
    outputs = {o.name for o in graph.output}
    while True:
        used = {name for node in graph.node for name in node.input} | outputs
        dead = [node for node in graph.node if not any(out in used for out in node.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)


def fold_pads_into_convs(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """(the model with every zero, spatial-only Pad that feeds a single Conv folded into it, how
    many were folded). Other Pads are left as they are (the structure check then names them)."""
    graph = model.graph
    candidates = []
    for node in graph.node:
        if node.op_type != "Pad" or len(node.input) < 2 or not _zero_constant(graph, node):
            continue
        consumers = _consumers(graph, node.output[0])
        if len(consumers) == 1 and consumers[0].op_type == "Conv" and consumers[0].input[0] == node.output[0]:
            candidates.append((node, consumers[0]))
    if not candidates:
        return model, 0
    values = _pad_values(model, [pad for pad, _ in candidates])
    folded = 0
    for pad, conv in candidates:
        pads = values[pad.input[1]]
        if pads.size != 8 or pads[[0, 1, 4, 5]].any() or (pads < 0).any():
            continue  # batch / channel padding, or cropping: not a convolution's padding
        conv_pads = list(_attribute(conv, "pads", [0, 0, 0, 0]))
        extra = [int(pads[2]), int(pads[3]), int(pads[6]), int(pads[7])]  # h_begin, w_begin, h_end, w_end
        merged = [a + b for a, b in zip(conv_pads, extra, strict=True)]
        for attr in list(conv.attribute):
            if attr.name in ("pads", "auto_pad"):
                conv.attribute.remove(attr)
        conv.attribute.append(helper.make_attribute("pads", merged))
        conv.input[0] = pad.input[0]
        graph.node.remove(pad)
        folded += 1
    _drop_dead_nodes(graph)
    onnx.checker.check_model(model)
    return model, folded


__all__ = ["fold_pads_into_convs"]
