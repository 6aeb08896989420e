"""Fused forward/backward for the layers' common training path (no dropout, no autocast).

LoRA (``lora_linear``), for a plain nn.Linear base:

    y = x Wᵀ + b + s · (x Aᵀ) Bᵀ          x: (N, in)  W: (out, in)  A: (r, in)  B: (out, r)

Autograd, given the same formula as separate ops, computes dL/dx as two (N, in) tensors, g W
from the base and s (g B) A from the adapter, and then adds them: one more (N, in) allocation
and one more pass over memory than the base layer alone, per step. ``lora_linear`` writes both
into ONE buffer, ``dx = g W`` then ``dx += s (g B) A`` (an in-place addmm), and accumulates the
forward the same way (``y += s h Bᵀ`` into the base output). What the adapter adds to a step is
then only its five r-sized products. Results and gradients are the unfused ops' up to
floating-point rounding (the same products, added in the same order).

Backward:  h = x Aᵀ (saved, (N, r)),  gB = g B (N, r),  dh = s gB
           dB = s gᵀ h,   dA = dhᵀ x,   dx = g W + dh A,   dW = gᵀ x,   db = Σ_N g
(dW and db only when the base is trainable.) The backward is built from differentiable ops, so
double backward works; ``setup_context`` makes it usable under torch.func transforms such as
``torch.func.grad``. While torch.compile traces, the layers call the plain ops instead and let
the compiler fuse them (``AdapterLinear._can_fuse``: torch 2.11 compiled these Functions with
a zero dL/dx on CUDA).

DoRA and HyLoRADA (``dora_linear``): with c the row factor (m / n for DoRA, (out,)) and f an
optional per-position factor (HyLoRADA v2, (N, 1)),

    z = x Wᵀ + s · (f ⊙ x Aᵀ) Bᵀ      y = c ⊙ z + b                           z: (N, out)

z is saved (c's gradient needs it); beyond that the backward allocates one (N, out) buffer:
it holds g ⊙ z until a matrix-vector product sums it into dL/dc, then dz = c ⊙ g. dL/dx =
dz W + dh A is written into one (N, in) buffer, as for LoRA:

    dz = c ⊙ g,  dhf = s dz B,  dB = s dzᵀ (f ⊙ h),  df = Σ_r dhf ⊙ h,  dh = f ⊙ dhf,
    dA = dhᵀ x,  dx = dz W + dh A,  dc = Σ_N g ⊙ z   (h = x Aᵀ, saved)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


class LoRALinearFunction(torch.autograd.Function):
    """(y, h) = (x Wᵀ + b + s h Bᵀ, x Aᵀ); h is returned only to be saved (non-differentiable)."""

    @staticmethod
    def forward(x, W, b, A, B, scaling):
        h = F.linear(x, A)                                    # (N, r)
        y = F.linear(x, W, b).addmm_(h, B.t(), alpha=scaling)  # (N, out)
        return y, h

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, W, b, A, B, scaling = inputs
        _, h = output
        ctx.mark_non_differentiable(h)
        ctx.set_materialize_grads(False)    # no zero tensor for h's (absent) gradient
        ctx.save_for_backward(x, W, A, B, h)
        ctx.scaling = scaling

    @staticmethod
    def backward(ctx, g, _grad_h):
        x, W, A, B, h = ctx.saved_tensors
        s = ctx.scaling
        need_x, need_w, need_b, need_a, need_bb, _ = ctx.needs_input_grad
        dx = dW = db = dA = dB = None
        if g is None:                                         # y took no part in the loss
            return dx, dW, db, dA, dB, None
        dh = (g @ B) * s if (need_x or need_a) else None      # (N, r)
        if need_x:
            dx = torch.mm(g, W).addmm_(dh, A)                 # (N, in), one buffer
        if need_w:
            dW = g.t() @ x                                    # (out, in)
        if need_b:
            db = _column_sums(g)                              # (out,)
        if need_a:
            dA = dh.t() @ x                                   # (r, in)
        if need_bb:
            dB = (g.t() @ h) * s                              # (out, r)
        return dx, dW, db, dA, dB, None


def lora_linear(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, A: torch.Tensor,
                B: torch.Tensor, scaling: float) -> torch.Tensor:
    """x Wᵀ + b + scaling · (x Aᵀ) Bᵀ for x (N, in), with the fused backward above."""
    return LoRALinearFunction.apply(x, W, b, A, B, scaling)[0]


class DoRALinearFunction(torch.autograd.Function):
    """(y, z, h) = (c ⊙ z + b, x Wᵀ + s (f ⊙ h) Bᵀ, x Aᵀ); z and h only to be saved."""

    @staticmethod
    def forward(x, W, b, A, B, scaling, c, f):
        h = F.linear(x, A)                                    # (N, r)
        hf = h if f is None else h * f                        # (N, r)
        z = F.linear(x, W).addmm_(hf, B.t(), alpha=scaling)   # (N, out)
        y = z * c                                             # (N, out)
        if b is not None:
            y.add_(b)
        return y, z, h

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, W, b, A, B, scaling, c, f = inputs
        _, z, h = output
        ctx.mark_non_differentiable(z, h)
        ctx.set_materialize_grads(False)    # else z's absent gradient becomes an (N, out) zeros
        ctx.save_for_backward(x, W, A, B, c, f, z, h)
        ctx.scaling = scaling

    @staticmethod
    def backward(ctx, g, _grad_z, _grad_h):
        x, W, A, B, c, f, z, h = ctx.saved_tensors
        s = ctx.scaling
        need_x, need_w, need_b, need_a, need_bb, _, need_c, need_f = ctx.needs_input_grad
        dx = dW = db = dA = dB = dc = df = None
        if g is None:                                         # y took no part in the loss
            return dx, dW, db, dA, dB, None, dc, df
        if need_c and not torch.is_grad_enabled():
            # one (N, out) buffer for both: g ⊙ z, summed for dc, then overwritten by dz
            buf = torch.mul(g, z)                             # (N, out)
            dc = _column_sums(buf).to(c.dtype)                # (out,)
            dz = torch.mul(g, c, out=buf)                     # (N, out)
        else:      # double backward records these ops (an out= op cannot be recorded)
            if need_c:
                dc = (g * z).sum(0, dtype=torch.float32).to(c.dtype)
            dz = g * c                                        # (N, out)
        hf = h if f is None else h * f                        # (N, r)
        dhf = (dz @ B) * s                                    # (N, r)
        dh = dhf if f is None else dhf * f                    # (N, r)
        if need_f:
            df = (dhf * h).sum(-1, keepdim=True)              # (N, 1)
        if need_x:
            dx = torch.mm(dz, W).addmm_(dh, A)                # (N, in), one buffer
        if need_w:
            dW = dz.t() @ x                                   # (out, in)
        if need_b:
            db = _column_sums(g)                              # (out,)
        if need_a:
            dA = dh.t() @ x                                   # (r, in)
        if need_bb:
            dB = (dz.t() @ hf) * s                            # (out, r)
        return dx, dW, db, dA, dB, None, dc, df


def _column_sums(t: torch.Tensor) -> torch.Tensor:
    """Σ_N t for t (N, out), as the matrix-vector product tᵀ 1 (float32 accumulation).

    Not ``t.sum(0)``: on CUDA a sum over the rows of a large tensor stages partial sums in a
    buffer up to twice t's size (measured on an H100: 128 MB for a 4096 × 4096 float32 t).
    """
    return torch.mv(t.t(), t.new_ones(t.shape[0]))           # (out,)


def dora_linear(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, A: torch.Tensor,
                B: torch.Tensor, scaling: float, c: torch.Tensor,
                f: torch.Tensor | None = None) -> torch.Tensor:
    """c ⊙ (x Wᵀ + scaling · (f ⊙ x Aᵀ) Bᵀ) + b for x (N, in), with the fused backward above."""
    return DoRALinearFunction.apply(x, W, b, A, B, scaling, c, f)[0]


def autocast_active(device_type: str) -> bool:
    """Whether autocast is on for this device type (any torch >= 2.1)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:     # torch < 2.4: no device argument
        if device_type == "cpu":
            return torch.is_autocast_cpu_enabled()
        return torch.is_autocast_enabled()
