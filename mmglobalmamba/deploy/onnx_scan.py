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

Forms (``form=``), chosen by measurement (docs/deploy.md, "The ONNX scan"):

* ``'chunk_exp'`` (default): the body computes the decays ``exp(dt A)`` and inputs
  ``dt x B`` of its own chunk, (steps, batch, dim, N) at a time, so the (L, batch, dim, N)
  tensors never exist in memory; it gathers the chunk's states and forms ``<C, h>`` for
  the whole chunk with one Mul + ReduceSum.
* ``'full_exp'``: decays and inputs for all L at once outside the Scan (one vectorized Exp
  over (L, batch, dim, N)); the body only multiplies and adds.

Only ``onnx`` is needed here (no torch): the export (``export.py``) replaces each
placeholder scan node of the traced graph by these nodes, and tests build small models
from them directly.
"""
import itertools

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ['DEFAULT_STEPS', 'DEFAULT_FORM', 'FORMS', 'PLACEHOLDER_DOMAIN', 'PLACEHOLDER_OP',
           'recurrence_nodes', 'recurrence_model', 'expand_placeholders']

DEFAULT_STEPS = 8
Y_FORM = 'chunk_matmul'
DEFAULT_FORM = 'chunk_exp'
FORMS = ('chunk_exp', 'full_exp')

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


def _time_major(b, value, rank, pad, chunk_shape):
    """(batch, L, ...) of ``rank`` dims -> ``chunk_shape`` (n, steps, ...): time first (a
    Transpose that only moves a size-1 axis at batch 1), L padded with zeros to
    n * steps, split into chunks."""
    value = b.node('Transpose', [value], perm=[1, 0] + list(range(2, rank)))  # (L, batch, ...)
    if pad:
        value = b.node('Pad', [value, b.const([0] * rank + [pad] + [0] * (rank - 1))],
                       mode='constant')
    return b.node('Reshape', [value, b.const(chunk_shape)])


def _body(prefix, steps, form, a_name, state_shape, shared_bc):
    """The Scan body: state h (1, batch, N, dim) and one chunk -> next h, y (steps, batch, dim).

    Channels are the innermost axis everywhere, so that every broadcast in the body runs
    over spans of ``dim`` contiguous values (ORT's broadcasting Mul is slow on short spans).
    chunk_exp inputs: dt, dt*x (steps, b, 1, d), B, C (steps, b, N, G);
    full_exp inputs: dA, dBu (steps, b, N, d), C (steps, b, N, G)."""
    b = _Builder(prefix + '/body')
    f32 = TensorProto.FLOAT
    h_in = b.name('h_in')
    if form == 'chunk_exp':
        names = [b.name(n) for n in ('dt', 'dtx', 'B', 'C')]
        dt, dtx, B, C = names
        decay = b.node('Exp', [b.node('Mul', [dt, a_name])])        # (steps, b, N, d)
        drive = b.node('Mul', [dtx, B])                              # (steps, b, N, d)
    else:
        names = [b.name(n) for n in ('dA', 'dBu', 'C')]
        decay, drive, C = names
    if steps > 1:
        decays = b.node('Split', [decay], [b.name(f'decay_{i}') for i in range(steps)],
                        axis=0, num_outputs=steps)
        drives = b.node('Split', [drive], [b.name(f'drive_{i}') for i in range(steps)],
                        axis=0, num_outputs=steps)
    else:
        decays, drives = [decay], [drive]
    h = h_in
    states = []
    h_out = b.name('h_out')
    for i in range(steps):                                           # h: (1, b, N, d)
        last = [h_out] if i == steps - 1 else None
        h = b.node('Add', [b.node('Mul', [decays[i], h]), drives[i]], last)
        states.append(h)
    y = b.name('y')
    if Y_FORM == 'step_matmul' and shared_bc:
        cs = b.node('Split', [C], [b.name(f'C_{i}') for i in range(steps)], axis=0,
                    num_outputs=steps) if steps > 1 else [C]
        ys = [b.node('MatMul', [c, h]) for c, h in zip(cs, states)]
        b.node('Concat', ys, [y], axis=0) if steps > 1 else b.node('Identity', ys, [y])
    else:
        chunk = b.node('Concat', states, axis=0) if steps > 1 else states[0]  # (steps, b, N, d)
        if shared_bc:   # <C_t, h_t> as (1, N) @ (N, d) per step: (steps, b, 1, d)
            b.node('MatMul', [C, chunk], [y])
        else:
            b.node('ReduceSum', [b.node('Mul', [chunk, C]), b.const([2])], [y],
                   keepdims=0)                                       # (steps, b, d)
    inputs = [helper.make_tensor_value_info(h_in, f32, state_shape)]
    inputs += [helper.make_tensor_value_info(n, f32, None) for n in names]
    outputs = [helper.make_tensor_value_info(h_out, f32, state_shape),
               helper.make_tensor_value_info(y, f32, None)]
    return helper.make_graph(b.nodes, prefix.replace('/', '_') + '_body', inputs, outputs)


def recurrence_nodes(dt, x, A, B, C, y, *, batch, dim, groups, d_state, length,
                     steps=DEFAULT_STEPS, form=DEFAULT_FORM, prefix=None):
    """Nodes computing ``y`` (batch, L, dim) from dt, x (batch, L, dim), A (dim, N) and
    B, C (batch, L, N, groups) with groups 1 (shared by all channels) or dim.

    The (batch, L, channels) layout is the one the mixer's projections produce, so the
    export needs no transposes of dt, B and C around the scan. All sizes are static (the
    export is); ``steps`` time steps per Scan iteration. Returns the list of nodes (only
    default-domain ops; the Scan body is their attribute)."""
    if form not in FORMS:
        raise ValueError(f'form must be one of {FORMS}, got {form!r}')
    if steps < 1:
        raise ValueError(f'steps must be >= 1, got {steps}')
    if groups not in (1, dim):
        raise ValueError(f'B/C groups must be 1 or dim={dim}, got {groups}')
    if length < 1:
        raise ValueError(f'the sequence must have at least one step, got L={length}')
    prefix = prefix or f'selective_scan_{next(_unique)}'
    b = _Builder(prefix)
    n = -(-length // steps)                                          # chunks
    pad = n * steps - length
    state_shape = [1, batch, d_state, dim]
    dtx = b.node('Mul', [dt, x])                                     # (b, L, d)
    chan = [n, steps, batch, 1, dim]
    dt5 = _time_major(b, dt, 3, pad, chan)                              # (n, steps, b, 1, d)
    dtx5 = _time_major(b, dtx, 3, pad, chan)
    bc = [n, steps, batch, d_state, groups]
    B5 = _time_major(b, B, 4, pad, bc)                                  # (n, steps, b, N, G)
    C5 = _time_major(b, C, 4, pad, [n, steps, batch, 1, d_state] if groups == 1 else bc)
    A_t = b.node('Transpose', [A], perm=[1, 0])                      # (N, d)
    if form == 'chunk_exp':
        scan_inputs = [dt5, dtx5, B5, C5]
    else:
        dA = b.node('Exp', [b.node('Mul', [dt5, A_t])])              # (n, steps, b, N, d)
        dBu = b.node('Mul', [dtx5, B5])
        scan_inputs = [dA, dBu, C5]
    h0 = b.node('ConstantOfShape', [b.const(state_shape)],
                value=helper.make_tensor('zero', TensorProto.FLOAT, [1], [0.0]))
    body = _body(prefix, steps, form, A_t, state_shape, groups == 1)
    _, ys = b.node('Scan', [h0] + scan_inputs, [b.name('h_last'), b.name('ys')],
                   body=body, num_scan_inputs=len(scan_inputs))      # ys: (n, steps, b, d)
    ys = b.node('Reshape', [ys, b.const([n * steps, batch, dim])])   # (L + pad, b, d)
    if pad:
        ys = b.node('Slice', [ys, b.const([0]), b.const([length]), b.const([0])])
    b.node('Transpose', [ys], [y], perm=[1, 0, 2])                   # (b, L, d)
    return b.nodes


def recurrence_model(batch, dim, groups, d_state, length, steps=DEFAULT_STEPS,
                     form=DEFAULT_FORM, opset=18):
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
                             form=form, prefix='scan')
    graph = helper.make_graph(nodes, 'selective_scan', inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', opset)])
    model.ir_version = min(model.ir_version, 10)
    onnx.checker.check_model(model, full_check=True)
    return model


def expand_placeholders(model, steps=DEFAULT_STEPS, form=DEFAULT_FORM):
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
        nodes.extend(recurrence_nodes(*node.input, node.output[0], steps=steps, form=form,
                                      prefix=f'selective_scan_{count}', **sizes))
        count += 1
    del graph.node[:]
    graph.node.extend(nodes)
    kept = [o for o in model.opset_import if o.domain != PLACEHOLDER_DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return count
