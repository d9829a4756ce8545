"""The selective-scan recurrence in standard ONNX ops: one ``Scan`` over chunks of steps.

The recurrence (docs/algorithm.md 3, with dt already ``softplus(delta + delta_bias)``)::

    h_t = exp(dt_t A) * h_{t-1} + dt_t x_t B_t          h: (batch, dim, N)
    y_t = <C_t, h_t>                                     y: (batch, dim)

is written as an ONNX ``Scan`` whose body advances ``steps`` time steps per iteration (the
body holds ``steps`` Mul/Add pairs): ORT pays a fixed cost per node and per iteration, so a
few steps per iteration amortize it, while the graph stays the same size for every sequence
length (never unrolled over L). The sequence is padded to a multiple of ``steps`` with
identity steps (dt = 0: decay exp(0) = 1, input 0), whose outputs are dropped, so the result
is exact, step for step the plain recurrence (no cumulative sums, no divisions).

The decays ``exp(dt A)`` and inputs ``dt x B`` are formed inside the body for its chunk
only, so the (L, batch, N, dim) tensors never exist in memory (forming them for all L at
once outside the Scan, and regrouping blocks of steps into a vectorized two-level scan,
both measured slower; docs/deploy.md, "The ONNX scan").

Only ``onnx`` is needed here (no torch): the export (``export.py``) replaces each
placeholder scan node of the traced graph by these nodes, and tests build small models
from them directly.
"""
import itertools

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ['DEFAULT_STEPS', 'PLACEHOLDER_DOMAIN', 'PLACEHOLDER_OP',
           'recurrence_nodes', 'recurrence_model', 'expand_placeholders']

DEFAULT_STEPS = 8

PLACEHOLDER_DOMAIN = 'mmglobalmamba.deploy'
PLACEHOLDER_OP = 'SsmRecurrence'

_unique = itertools.count()


class _Builder:
    """Appends nodes with names under one prefix; ``const`` makes an int64/float Constant."""

    def __init__(self, prefix):
        self.prefix = prefix
        self.nodes = []

    def name(self, what):
        return f'{self.prefix}/{what}'

    def node(self, op, inputs, outputs=None, **attrs):
        outputs = outputs or [self.name(f'{op}_{len(self.nodes)}')]
        self.nodes.append(helper.make_node(op, inputs, outputs,
                                           name=self.name(f'{op}_{len(self.nodes)}'), **attrs))
        return outputs[0] if len(outputs) == 1 else outputs

    def const(self, values, dtype=np.int64):
        out = self.name(f'const_{len(self.nodes)}')
        tensor = numpy_helper.from_array(np.asarray(values, dtype=dtype), out)
        self.nodes.append(helper.make_node('Constant', [], [out], value=tensor,
                                           name=self.name(f'Constant_{len(self.nodes)}')))
        return out


def _swap_batch_time(b, value, shape, out=None):
    """(batch, L, ...) <-> (L, batch, ...) with ``shape`` the result's static shape: at
    batch 1 a Reshape (free: ORT's Transpose copies even when only a 1 moves), else a
    Transpose."""
    out = [out] if out else None
    if 1 in shape[:2]:
        return b.node('Reshape', [value, b.const(shape)], out)
    return b.node('Transpose', [value], out, perm=[1, 0] + list(range(2, len(shape))))


def _time_major(b, value, shape, pad, chunk_shape):
    """(batch, L, ...) of static ``shape`` -> ``chunk_shape`` (n, steps, ...): time first,
    L padded with zeros to n * steps, split into chunks."""
    rank = len(shape)
    value = _swap_batch_time(b, value, [shape[1], shape[0]] + list(shape[2:]))
    if pad:
        value = b.node('Pad', [value, b.const([0] * rank + [pad] + [0] * (rank - 1))],
                       mode='constant')
    return b.node('Reshape', [value, b.const(chunk_shape)])


def _body(prefix, steps, a_name, state_shape, shared_bc):
    """The Scan body: state h (1, batch, N, d) and one chunk -> next h, y (steps, b, 1, d).

    Chunk inputs: dt, dt*x (steps, b, 1, d), B (steps, b, N, G), C (steps, b, 1, N) shared
    or (steps, b, N, d) per channel. Channels are the innermost axis everywhere, so every
    broadcast runs over spans of ``d`` contiguous values (ORT's broadcasting Mul is slow on
    short spans). The chunk's decays and inputs are formed at once, (steps, b, N, d), then
    h steps through them with one Mul and one Add each; ``<C, h>`` of the chunk's states is
    one MatMul ((1, N) @ (N, d) per step)."""
    b = _Builder(prefix + '/body')
    f32 = TensorProto.FLOAT
    h_in, h_out, y = b.name('h_in'), b.name('h_out'), b.name('y')
    names = [b.name(n) for n in ('dt', 'dtx', 'B', 'C')]
    dt, dtx, B, C = names
    decay = b.node('Exp', [b.node('Mul', [dt, a_name])])            # (steps, b, N, d)
    drive = b.node('Mul', [dtx, B])                                  # (steps, b, N, d)
    if steps > 1:
        decays = b.node('Split', [decay], [b.name(f'decay_{j}') for j in range(steps)],
                        axis=0, num_outputs=steps)                   # (1, b, N, d) each
        drives = b.node('Split', [drive], [b.name(f'drive_{j}') for j in range(steps)],
                        axis=0, num_outputs=steps)
    else:
        decays, drives = [decay], [drive]
    h, states = h_in, []
    for j in range(steps):
        h = b.node('Add', [b.node('Mul', [decays[j], h]), drives[j]],
                   [h_out] if j == steps - 1 else None)
        states.append(h)
    chunk = b.node('Concat', states, axis=0) if steps > 1 else states[0]  # (steps, b, N, d)
    if shared_bc:
        b.node('MatMul', [C, chunk], [y])                            # (steps, b, 1, d)
    else:
        b.node('ReduceSum', [b.node('Mul', [chunk, C]), b.const([2])], [y], keepdims=1)
    inputs = [helper.make_tensor_value_info(h_in, f32, state_shape)]
    inputs += [helper.make_tensor_value_info(n, f32, None) for n in names]
    outputs = [helper.make_tensor_value_info(h_out, f32, state_shape),
               helper.make_tensor_value_info(y, f32, None)]
    return helper.make_graph(b.nodes, prefix.replace('/', '_') + '_body', inputs, outputs)


def recurrence_nodes(dt, x, A, B, C, y, *, batch, dim, groups, d_state, length,
                     steps=DEFAULT_STEPS, prefix=None):
    """Nodes computing ``y`` (batch, L, dim) from dt, x (batch, L, dim), A (dim, N) and
    B, C (batch, L, N, groups) with groups 1 (shared by all channels) or dim.

    The (batch, L, channels) layout is the one the mixer's projections produce, so the
    export needs no transposes of dt, B and C around the scan. All sizes are static (the
    export is); ``steps`` time steps per Scan iteration. Returns the list of nodes (only
    default-domain ops; the Scan body is their attribute)."""
    if steps < 1:
        raise ValueError(f'steps must be >= 1, got {steps}')
    if groups not in (1, dim):
        raise ValueError(f'B/C groups must be 1 or dim={dim}, got {groups}')
    if length < 1:
        raise ValueError(f'the sequence must have at least one step, got L={length}')
    prefix = prefix or f'selective_scan_{next(_unique)}'
    b = _Builder(prefix)
    n = -(-length // steps)                                          # Scan iterations
    pad = n * steps - length
    state_shape = [1, batch, d_state, dim]
    dtx = b.node('Mul', [dt, x])                                     # (b, L, d)
    seq, bc_shape = [batch, length, dim], [batch, length, d_state, groups]
    scan_inputs = [
        _time_major(b, dt, seq, pad, [n, steps, batch, 1, dim]),     # (n, steps, b, 1, d)
        _time_major(b, dtx, seq, pad, [n, steps, batch, 1, dim]),
        _time_major(b, B, bc_shape, pad, [n, steps, batch, d_state, groups]),
        _time_major(b, C, bc_shape, pad, [n, steps, batch, 1, d_state] if groups == 1
                    else [n, steps, batch, d_state, dim])]
    A_t = b.node('Transpose', [A], perm=[1, 0])                      # (N, d)
    h0 = b.node('ConstantOfShape', [b.const(state_shape)],
                value=helper.make_tensor('zero', TensorProto.FLOAT, [1], [0.0]))
    body = _body(prefix, steps, A_t, state_shape, groups == 1)
    _, ys = b.node('Scan', [h0] + scan_inputs, [b.name('h_last'), b.name('ys')],
                   body=body, num_scan_inputs=len(scan_inputs))      # (n, steps, b, 1, d)
    ys = b.node('Reshape', [ys, b.const([n * steps, batch, dim])])   # (L + pad, b, d)
    if pad:
        ys = b.node('Slice', [ys, b.const([0]), b.const([length]), b.const([0])])
    _swap_batch_time(b, ys, [batch, length, dim], y)                 # (b, L, d)
    return b.nodes


def recurrence_model(batch, dim, groups, d_state, length, steps=DEFAULT_STEPS, opset=18):
    """A model of the recurrence alone: inputs dt, x, A, B, C; output y (tests, probes)."""
    f32 = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info('dt', f32, [batch, length, dim]),
              helper.make_tensor_value_info('x', f32, [batch, length, dim]),
              helper.make_tensor_value_info('A', f32, [dim, d_state]),
              helper.make_tensor_value_info('B', f32, [batch, length, d_state, groups]),
              helper.make_tensor_value_info('C', f32, [batch, length, d_state, groups])]
    outputs = [helper.make_tensor_value_info('y', f32, [batch, length, dim])]
    nodes = recurrence_nodes('dt', 'x', 'A', 'B', 'C', 'y', batch=batch, dim=dim,
                             groups=groups, d_state=d_state, length=length, steps=steps,
                             prefix='scan')
    graph = helper.make_graph(nodes, 'selective_scan', inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', opset)])
    model.ir_version = min(model.ir_version, 10)
    onnx.checker.check_model(model, full_check=True)
    return model


def expand_placeholders(model, steps=DEFAULT_STEPS):
    """Replace every placeholder scan node (``PLACEHOLDER_DOMAIN``, written by the export's
    translation with its static sizes as attributes) of ``model``'s main graph by
    :func:`recurrence_nodes`, in place, and drop the placeholder domain. Returns the count."""
    graph = model.graph
    nodes, count = [], 0
    for node in graph.node:
        if node.domain != PLACEHOLDER_DOMAIN:
            nodes.append(node)
            continue
        if node.op_type != PLACEHOLDER_OP:
            raise ValueError(f'unknown placeholder op {node.domain}::{node.op_type}')
        sizes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        nodes.extend(recurrence_nodes(*node.input, node.output[0], steps=steps,
                                      prefix=f'selective_scan_{count}', **sizes))
        count += 1
    del graph.node[:]
    graph.node.extend(nodes)
    kept = [o for o in model.opset_import if o.domain != PLACEHOLDER_DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return count
