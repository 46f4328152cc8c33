"""ONNX graph rewrites that compute the same values at a lower cost (in place, on onnx_ir models)."""
from __future__ import annotations

import numpy as np
import onnx_ir as ir


def _constant(value: ir.Value | None) -> np.ndarray | None:
    """The value's array if it is an initializer or a Constant node's output, else None."""
    if value is None:
        return None
    if value.const_value is not None:
        return value.const_value.numpy()
    producer = value.producer()
    if producer is not None and producer.op_type == "Constant" and "value" in producer.attributes:
        return producer.attributes["value"].as_tensor().numpy()
    return None


def _slice_axes(node: ir.Node) -> list[int] | None:
    """The axes a Slice cuts (None unless they and its steps, all 1, are constants)."""
    axes = _constant(node.inputs[3]) if len(node.inputs) > 3 else None
    steps = _constant(node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4] is not None else np.ones(1)
    if axes is None or steps is None or not np.all(steps == 1):
        return None
    return [int(a) for a in axes.reshape(-1)]


def fuse_slices(model: ir.Model) -> int:
    """Slice(Slice(x)) over different axes -> one Slice: ONNX Runtime copies each Slice's output, so two in a
    row copy the first cut in full. Returns the number of pairs fused."""
    fused = 0
    for node in list(model.graph):
        if node.op_type != "Slice" or (outer_axes := _slice_axes(node)) is None:
            continue
        inner = node.inputs[0].producer()
        if inner is None or inner.op_type != "Slice" or len(inner.outputs[0].uses()) != 1:
            continue
        inner_axes = _slice_axes(inner)
        if inner_axes is None or any(a < 0 for a in inner_axes + outer_axes) or set(inner_axes) & set(outer_axes):
            continue  # negative axes could name the same axis
        tape = [ir.node("Concat", [inner.inputs[i], node.inputs[i]], attributes={"axis": 0}) for i in (1, 2, 3)]
        merged = ir.node("Slice", [inner.inputs[0], *(c.outputs[0] for c in tape)], name=node.name)
        model.graph.insert_before(node, [*tape, merged])
        old = node.outputs[0]
        ir.convenience.replace_all_uses_with(old, merged.outputs[0])
        model.graph.remove([node, inner], safe=True)
        merged.outputs[0].name, merged.outputs[0].type, merged.outputs[0].shape = old.name, old.type, old.shape
        fused += 1
    return fused


#: Ops that only move or reshape elements: a Cast after them converts the same values as before them.
DATA_MOVEMENT = frozenset({"Slice", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity"})


def sink_input_casts(model: ir.Model) -> int:
    """Move each Cast of a graph input below the data-movement ops that follow it: they then move the input's
    narrow elements (uint8 pixels, not float32), and the Cast converts only what they keep (the resize's
    windows, not the whole image). Every exported graph is written so (to_onnx); TensorRT takes a uint8 input
    only into a Cast, so its graph is this one undone (hoist_input_casts). Returns the number of ops the Casts
    moved past."""
    graph, moved = model.graph, 0
    work = [n for n in graph if n.op_type == "Cast" and n.inputs[0] in graph.inputs]
    while work:
        cast = work.pop()
        source, result = cast.inputs[0], cast.outputs[0]
        for use in list(result.uses()):
            user, index = use.node, use.idx
            if user.op_type == "Shape":
                user.replace_input_with(index, source)
            elif user.op_type in DATA_MOVEMENT and index == 0 and len(user.outputs) == 1:
                user.replace_input_with(0, source)
                moved_out = user.outputs[0]
                later = ir.node("Cast", [moved_out], attributes={"to": cast.attributes["to"].as_int()},
                                name=f"{cast.name}_after_{user.name}")
                later.outputs[0].type, later.outputs[0].shape = moved_out.type, moved_out.shape
                for other in list(moved_out.uses()):
                    if other.node is not later:
                        other.node.replace_input_with(other.idx, later.outputs[0])
                moved_out.type = source.type
                graph.insert_after(user, later)
                work.append(later)
                moved += 1
        if not result.uses() and result not in graph.outputs:
            graph.remove(cast, safe=True)
    return moved


def _cast_region(source: ir.Value) -> tuple[list[ir.Node], list[ir.Node], list[ir.Node]] | None:
    """The data-movement ops that carry `source`'s elements, the Casts that end them and the Shape ops that read
    them; None unless those are all its users (nothing else reads the input's own elements)."""
    moves, casts, shapes, stack = [], [], [], [source]
    while stack:
        for use in stack.pop().uses():
            node = use.node
            if node.op_type == "Shape":
                shapes.append(node)
            elif node.op_type == "Cast" and use.idx == 0:
                casts.append(node)
            elif node.op_type in DATA_MOVEMENT and use.idx == 0 and len(node.outputs) == 1:
                moves.append(node)
                stack.append(node.outputs[0])
            else:
                return None
    return moves, casts, shapes


def hoist_input_casts(model: ir.Model) -> int:
    """sink_input_casts undone: each graph input that reaches the rest of the graph only through data-movement
    ops ending in Casts to one type gets a single Cast as its only user, and those ops move the converted
    elements. The form TensorRT requires (a uint8 network input may only feed a Cast). Returns the number of
    Casts removed below the input (in place)."""
    graph, removed = model.graph, 0
    for source in graph.inputs:
        region = _cast_region(source)
        if region is None:
            continue
        moves, casts, shapes = region
        targets = {cast.attributes["to"].as_int() for cast in casts}
        ends = [cast.outputs[0] for cast in casts] + [node.outputs[0] for node in moves]
        if len(targets) != 1 or any(value in graph.outputs for value in ends):
            continue
        if len(casts) == 1 and casts[0].inputs[0] is source and not moves and not shapes:
            continue  # already a single Cast first
        dtype = ir.DataType(targets.pop())
        first = ir.node("Cast", [source], attributes={"to": dtype}, name=f"{source.name}_to_{dtype.name.lower()}")
        first.outputs[0].name, first.outputs[0].type, first.outputs[0].shape = first.name, ir.TensorType(dtype), source.shape
        graph.insert_before(graph[0], first)
        for node in [*moves, *shapes, *casts]:
            if node.inputs[0] is source:
                node.replace_input_with(0, first.outputs[0])
        for node in moves:
            node.outputs[0].type = ir.TensorType(dtype)
        for cast in casts:
            ir.convenience.replace_all_uses_with(cast.outputs[0], cast.inputs[0])
            graph.remove(cast, safe=True)
            removed += 1
    return removed
