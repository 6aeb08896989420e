"""A fused forward/backward for LoRA's common training path (plain nn.Linear base, no dropout).

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
``torch.func.grad``, and torch.compile traces it as one graph.
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
        ctx.save_for_backward(x, W, A, B, h)
        ctx.scaling = scaling

    @staticmethod
    def backward(ctx, g, _grad_h):
        x, W, A, B, h = ctx.saved_tensors
        s = ctx.scaling
        need_x, need_w, need_b, need_a, need_bb, _ = ctx.needs_input_grad
        dx = dW = db = dA = dB = None
        dh = (g @ B) * s if (need_x or need_a) else None      # (N, r)
        if need_x:
            dx = torch.mm(g, W).addmm_(dh, A)                 # (N, in), one buffer
        if need_w:
            dW = g.t() @ x                                    # (out, in)
        if need_b:
            db = g.sum(0)                                     # (out,)
        if need_a:
            dA = dh.t() @ x                                   # (r, in)
        if need_bb:
            dB = (g.t() @ h) * s                              # (out, r)
        return dx, dW, db, dA, dB, None


def lora_linear(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, A: torch.Tensor,
                B: torch.Tensor, scaling: float) -> torch.Tensor:
    """x Wᵀ + b + scaling · (x Aᵀ) Bᵀ for x (N, in), with the fused backward above."""
    return LoRALinearFunction.apply(x, W, b, A, B, scaling)[0]


def autocast_active(device_type: str) -> bool:
    """Whether autocast is on for this device type (any torch >= 2.1)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:     # torch < 2.4: no device argument
        if device_type == "cpu":
            return torch.is_autocast_cpu_enabled()
        return torch.is_autocast_enabled()
