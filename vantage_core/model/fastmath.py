"""Transcendental-heavy pieces of the training step with hand-written gradients.

On Linux CPU, MLX evaluates ``exp``/``sigmoid`` one element at a time (about 15 ns and 30 ns
an element on this project's 2-core machine, against about 0.3 ns for an add), so the
softmax/cross-entropy and SiLU volume, not the matmuls, bound a small model's step. Here:

* ``exp``: on CPU, Cephes' float32 ``expf`` (range reduction to |r| <= ln2/2, degree-6
  polynomial, 2^n built in the exponent bits): about 1 ulp, made of plain elementwise ops
  that ``mx.compile`` fuses into one vectorised loop. Elsewhere ``mx.exp``.
* ``swiglu(g, u) = silu(g) * u`` with a VJP that reuses the forward's sigmoid (no second
  exp pass in the backward).
* ``cross_entropy(logits, targets)``: per-row loss in float32; the softmax of the forward is
  kept for the backward (one exp pass in all, instead of logsumexp + softmax). On the GPU it
  is MLX's fused ``mx.fast.cross_entropy`` (float32 accumulation, no float32 logits copy).
* ``softmax_lastdim``: a softmax whose backward needs no exp (attention on CPU).
"""

from __future__ import annotations

import mlx.core as mx

_LOG2E = 1.4426950408889634
_C1, _C2 = 0.693359375, -2.12194440e-4          # ln 2 split in two (Cephes)
_P = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1,
      5.0000001201e-1)
_XMAX, _XMIN = 88.3762626647949, -87.33654475


def on_cpu() -> bool:
    return mx.default_device() == mx.cpu


def exp_poly(x: mx.array) -> mx.array:
    """float32 exp, about 1 ulp; exp(x) = 0 below -87.34 (float32's smallest normal)."""
    xf = x.astype(mx.float32)
    xc = mx.clip(xf, _XMIN, _XMAX)
    n = mx.round(xc * _LOG2E)
    r = xc - n * _C1 - n * _C2
    p = _P[0]
    for c in _P[1:]:
        p = p * r + c
    e = p * (r * r) + r + 1.0
    two_n = mx.left_shift(n.astype(mx.int32) + 127, 23).view(mx.float32)
    out = mx.where(xf < _XMIN, 0.0, e * two_n)
    return out.astype(x.dtype)


def exp(x: mx.array) -> mx.array:
    return exp_poly(x) if on_cpu() and x.dtype == mx.float32 else mx.exp(x)


def sigmoid(x: mx.array) -> mx.array:
    if on_cpu() and x.dtype == mx.float32:
        return 1.0 / (1.0 + exp_poly(-x))
    return mx.sigmoid(x)


@mx.custom_function
def _swiglu(g, u):
    s = sigmoid(g)
    return g * s * u, s


@_swiglu.vjp
def _swiglu_vjp(primals, cotangents, outputs):
    g, u = primals
    dh = cotangents[0]
    s = outputs[1]
    gs = g * s
    return dh * u * (s + gs * (1 - s)), dh * gs


def swiglu(g: mx.array, u: mx.array) -> mx.array:
    """silu(g) * u (SiLU gate, mlx-lm's SwiGLU)."""
    return _swiglu(g, u)[0]


@mx.custom_function
def _ce(logits, targets):
    m = mx.stop_gradient(logits.max(axis=-1, keepdims=True))
    e = exp(logits - m)
    s = e.sum(axis=-1, keepdims=True)
    lse = (m + mx.log(s))[..., 0]
    tgt = mx.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return lse - tgt, e / s


@_ce.vjp
def _ce_vjp(primals, cotangents, outputs):
    logits, targets = primals
    g = cotangents[0]
    p = outputs[1]
    onehot = targets[..., None] == mx.arange(logits.shape[-1], dtype=targets.dtype)
    return (g[..., None] * (p - onehot)).astype(logits.dtype), mx.zeros_like(targets)


def cross_entropy(logits: mx.array, targets: mx.array) -> mx.array:
    """Per-row -log softmax(logits)[target], float32 (the same function as
    ``nn.losses.cross_entropy(logits.astype(float32), targets)``)."""
    if not on_cpu():
        return mx.fast.cross_entropy(logits, targets)
    return _ce(logits.astype(mx.float32), targets)[0]


@mx.custom_function
def _softmax(x):
    m = mx.stop_gradient(x.max(axis=-1, keepdims=True))
    e = exp(x - m)
    return e / e.sum(axis=-1, keepdims=True)


@_softmax.vjp
def _softmax_vjp(primals, cotangent, output):
    p = output
    return p * (cotangent - (cotangent * p).sum(axis=-1, keepdims=True))


def softmax_lastdim(x: mx.array) -> mx.array:
    return _softmax(x)
