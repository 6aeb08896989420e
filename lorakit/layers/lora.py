"""LoRA: a frozen linear layer plus a trainable rank-r update.

    y = W x + b + (alpha / r) * B (A dropout(x))

    x: (..., in)    W: (out, in)    A: (r, in)    B: (out, r)    y: (..., out)

B starts at zero, so the layer equals its base at init; A starts random (Kaiming-uniform, as in
loralib and PEFT), so B receives a gradient from the first step. The update is applied as
B(Ax): r(in + out) multiply-adds per token, never the (out x in) matrix BA.

Speed: x is flattened to (N, in) and the update is accumulated into the base output by one
addmm with the scaling as its alpha, so the adapter adds no (N, out) tensor in forward or
backward beyond the base layer's own output. On the common path (a plain nn.Linear base
without hooks, no dropout active, no autocast) ``fused.lora_linear`` also writes dL/dx's two
terms into one (N, in) buffer; otherwise the base module is called and ``add_low_rank`` adds
the update.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import AdapterLinear, AdapterSpec, PeftFlavour, add_low_rank, check_probability
from .fused import lora_linear


class LoRALinear(AdapterLinear):
    """y = base(x) + (alpha / rank) * B A dropout(x), with A: (rank, in), B: (out, rank)."""

    ADAPTER = AdapterSpec(
        "lora", init_kwargs={"rank": "rank", "alpha": "alpha", "dropout": "dropout_p"},
        peft=PeftFlavour({"use_dora": False}, {"lora_A.weight": "lora_A", "lora_B.weight": "lora_B"}),
        bench_peer=("lora", "peft"),
        trainable_params=lambda d_in, d_out, r: r * (d_in + d_out))             # A, B

    def __init__(self, base_layer: nn.Linear, rank: int = 4, alpha: float = 1.0,
                 dropout: float = 0.0) -> None:
        super().__init__(base_layer, rank, alpha)
        self.dropout_p = check_probability("dropout", dropout)
        self.dropout = nn.Dropout(self.dropout_p) if self.dropout_p > 0 else nn.Identity()
        self.lora_A = nn.Parameter(torch.empty(self.rank, self.in_features, **self._factory()))
        self.lora_B = nn.Parameter(torch.empty(self.out_features, self.rank, **self._factory()))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # rows of norm ~0.58
        nn.init.zeros_(self.lora_B)                             # update starts at 0

    def delta_weight(self) -> torch.Tensor:
        return self.scaling * (self.lora_B @ self.lora_A)       # (out, in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_x(x)
        if self.merged:
            return self.base_layer(x)
        x2 = x.reshape(-1, self.in_features)                    # (N, in), N = prod(x.shape[:-1])
        W, b, A, B = self.base_layer.weight, self.base_layer.bias, self.lora_A, self.lora_B
        if not (self.training and self.dropout_p > 0) and self._can_fuse(x2, W, A, B):
            y = lora_linear(x2, W, b, A, B, self.scaling)       # the same, fused backward
        else:
            y = self.base_layer(x2)                             # (N, out)
            h = F.linear(self.dropout(x2), A)                   # (N, r)
            y = add_low_rank(y, h, B, self.scaling,             # y + s h Bᵀ, (N, out)
                             in_place=self._base_output_is_private())
        return y.view(*x.shape[:-1], self.out_features)         # (..., out)
