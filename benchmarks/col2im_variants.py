"""Alternative col2im lowerings for the scatter form (the library ships "phase"); used by col2im_lowering.py."""

import itertools
import math

import jax.numpy as jnp
import numpy as np
from jax import lax

from transconv_jax._spec import dilated_kernel, transpose_spatial


def gemm(y, w, spec):
    """cols: (*kernel, N, C_out, *spatial)."""
    n, c_in, *sp = y.shape
    _, cog, *k = w.shape
    g, nd = spec.groups, spec.ndim
    S = "".join("stu"[:nd])
    K = "".join("klm"[:nd])
    yg = y.reshape(n, g, c_in // g, *sp)
    wg = w.reshape(g, c_in // g, cog, *k)
    cols = jnp.einsum(f"ngc{S},gco{K}->{K}ngo{S}", yg, wg, precision=spec.precision)
    return cols.reshape(*k, n, g * cog, *sp)


def taps(k):
    return itertools.product(*(range(kk) for kk in k))


def col2im_pad(cols, spec, k, sp, out_sp, NC=None):
    zero = jnp.zeros((), cols[tuple(0 for _ in k)].dtype)
    total = None
    for t in taps(k):
        cfg = [(0, 0, 0), (0, 0, 0)]
        for ti, n, s, d, (lo, _hi), L in zip(t, sp, spec.stride, spec.dilation, spec.padding, out_sp):
            low = d * ti - lo
            cfg.append((low, L - low - (n - 1) * s - 1, s - 1))
        part = lax.pad(cols[t], zero, cfg)
        total = part if total is None else total + part
    return total


def col2im_at(cols, spec, k, sp, out_sp, NC=None):
    full = [
        max((n - 1) * s + dk, lo + L)
        for n, s, dk, (lo, hi), L in zip(sp, spec.stride, dilated_kernel(k, spec.dilation), spec.padding, out_sp)
    ]
    NC = NC or cols.shape[len(k) : len(k) + 2]
    buf = jnp.zeros((*NC, *full), cols[tuple(0 for _ in k)].dtype)
    for t in taps(k):
        idx = tuple(
            slice(d * ti, d * ti + (n - 1) * s + 1, s) for ti, n, s, d in zip(t, sp, spec.stride, spec.dilation)
        )
        buf = buf.at[(slice(None), slice(None), *idx)].add(cols[t])
    crop = tuple(slice(lo, lo + L) for (lo, _), L in zip(spec.padding, out_sp))
    return buf[(slice(None), slice(None), *crop)]


def _phase_geometry(spec, k, sp, out_sp):
    Q = [
        max(-(-((n - 1) * s + dk) // s), -(-(lo + L) // s))
        for n, s, dk, (lo, _), L in zip(sp, spec.stride, dilated_kernel(k, spec.dilation), spec.padding, out_sp)
    ]
    return Q


def col2im_phase(cols, spec, k, sp, out_sp, NC=None):
    Q = _phase_geometry(spec, k, sp, out_sp)
    nd = spec.ndim
    zero = jnp.zeros((), cols[tuple(0 for _ in k)].dtype)
    phases = {}
    for t in taps(k):
        r = tuple(d * ti % s for ti, s, d in zip(t, spec.stride, spec.dilation))
        cfg = [(0, 0, 0)] * 2 + [
            (d * ti // s, q - d * ti // s - n, 0) for ti, n, s, d, q in zip(t, sp, spec.stride, spec.dilation, Q)
        ]
        part = lax.pad(cols[t], zero, cfg)
        phases[r] = part if r not in phases else phases[r] + part
    N, C = NC or cols.shape[nd : nd + 2]
    empty = jnp.zeros((N, C, *Q), zero.dtype)
    stacked = jnp.stack([phases.get(r, empty) for r in taps(spec.stride)], axis=-1)
    stacked = stacked.reshape(N, C, *Q, *spec.stride)
    perm = (0, 1, *itertools.chain.from_iterable((2 + i, 2 + nd + i) for i in range(nd)))
    full = stacked.transpose(perm).reshape(N, C, *(q * s for q, s in zip(Q, spec.stride)))
    crop = tuple(slice(lo, lo + L) for (lo, _), L in zip(spec.padding, out_sp))
    return full[(slice(None), slice(None), *crop)]


def col2im_phase_at(cols, spec, k, sp, out_sp, NC=None):
    Q = _phase_geometry(spec, k, sp, out_sp)
    nd = spec.ndim
    N, C = NC or cols.shape[nd : nd + 2]
    inter = (N, C, *itertools.chain.from_iterable(zip(Q, spec.stride)))
    buf = jnp.zeros(inter, cols[tuple(0 for _ in k)].dtype)
    for t in taps(k):
        idx = itertools.chain.from_iterable(
            (slice(d * ti // s, d * ti // s + n), d * ti % s) for ti, n, s, d in zip(t, sp, spec.stride, spec.dilation)
        )
        buf = buf.at[(slice(None), slice(None), *idx)].add(cols[t])
    full = buf.reshape(N, C, *(q * s for q, s in zip(Q, spec.stride)))
    crop = tuple(slice(lo, lo + L) for (lo, _), L in zip(spec.padding, out_sp))
    return full[(slice(None), slice(None), *crop)]


VARIANTS = dict(pad=col2im_pad, at=col2im_at, phase=col2im_phase, phase_at=col2im_phase_at)


def make_form(variant):
    def form(y, w, spec):
        k, sp = w.shape[2:], y.shape[2:]
        out_sp = transpose_spatial(sp, k, spec)
        return VARIANTS[variant](gemm(y, w, spec), spec, k, sp, out_sp)

    return form


def gemm_taps(y, w, spec, layout):
    """Per-tap column arrays (N, C_out, *spatial), from one einsum then lax.split (its transpose is a concatenate)."""
    n, c_in, *sp = y.shape
    _, cog, *k = w.shape
    g, nd = spec.groups, spec.ndim
    S = "stu"[:nd]
    yg = y.reshape(n, g, c_in // g, *sp)
    wg = w.reshape(g, c_in // g, cog, -1)
    ntap = math.prod(k)
    if layout == "K":
        cols = jnp.einsum(f"ngc{S},gcoK->Kngo{S}", yg, wg, precision=spec.precision)
        cols = cols.reshape(ntap, n, g * cog, *sp)
        return [c.reshape(n, g * cog, *sp) for c in lax.split(cols, (1,) * ntap, axis=0)]
    cols = jnp.einsum(f"ngc{S},gcoK->ngoK{S}", yg, wg, precision=spec.precision)
    cols = cols.reshape(n, g * cog, ntap, *sp)
    return [c.reshape(n, g * cog, *sp) for c in lax.split(cols, (1,) * ntap, axis=2)]


class TapList:
    def __init__(self, parts, k):
        self.parts, self.k = parts, k

    def __getitem__(self, t):
        return self.parts[np.ravel_multi_index(t, self.k)]


def make_form2(variant, layout):
    def form(y, w, spec):
        k, sp = w.shape[2:], y.shape[2:]
        out_sp = transpose_spatial(sp, k, spec)
        parts = gemm_taps(y, w, spec, layout)
        return VARIANTS[variant](TapList(parts, k), spec, k, sp, out_sp, parts[0].shape[:2])

    return form


def col2im_phase_pad(cols, spec, k, sp, out_sp, NC=None):
    """Per phase: contiguous pads summed (no zeros added between taps); then one interior pad per phase."""
    zero = jnp.zeros((), cols[tuple(0 for _ in k)].dtype)
    phases = {}
    for t in taps(k):
        r = tuple(d * ti % s for ti, s, d in zip(t, spec.stride, spec.dilation))
        q0 = [d * ti // s for ti, s, d in zip(t, spec.stride, spec.dilation)]
        m = [max(d * (kk - 1) // s for kk in [kk]) for kk, s, d in zip(k, spec.stride, spec.dilation)]
        cfg = [(0, 0, 0)] * 2 + [(a, mm - a, 0) for a, mm in zip(q0, m)]
        part = lax.pad(cols[t], zero, cfg)
        phases[r] = part if r not in phases else phases[r] + part
    total = None
    for r, ph in phases.items():
        cfg = [(0, 0, 0)] * 2
        for rr, n, s, (lo, _), L in zip(r, ph.shape[2:], spec.stride, spec.padding, out_sp):
            low = rr - lo
            cfg.append((low, L - low - (n - 1) * s - 1, s - 1))
        part = lax.pad(ph, zero, cfg)
        total = part if total is None else total + part
    return total


VARIANTS["phase_pad"] = col2im_phase_pad
