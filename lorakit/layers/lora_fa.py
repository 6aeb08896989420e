"""LoRA-FA: LoRA with A frozen at its random init (Zhang et al., 2023, "LoRA-FA:
Memory-efficient Low-rank Adaptation").

    y = W x + b + (alpha / r) * B (A dropout(x)),   A frozen, only B trained

    x: (..., in)    W: (out, in)    A: (r, in), a buffer    B: (out, r)    y: (..., out)

The function is LoRA's; what changes is what trains. With A fixed, the update B A lives in the
fixed r-dimensional row space of A, and no dL/dA is computed (dL/dB needs only A x, (N, r));
the paper's point is the activation memory a training loop can save that way. This layer
reuses LoRA's forward and claims no memory saving of its own. A is a
*buffer*, not a frozen Parameter, so ``mark_only_adapters_trainable`` (which makes every
adapter Parameter trainable) leaves it frozen, while ``state_dict`` (and so ``save_adapter``)
still carries it: a saved LoRA-FA adapter reloads with the same A.

Not taught in the course: it is the example of ARCHITECTURE.md, "Adding a family" (this
module, one registration line in ``registry.py``, ``tests/layers/test_lora_fa.py``).
"""
from __future__ import annotations

from torch import nn

from .base import AdapterSpec, PeftFlavour
from .lora import LoRALinear


class LoRAFALinear(LoRALinear):
    """y = base(x) + (alpha / rank) * B A dropout(x), A: (rank, in) frozen, B: (out, rank) trained."""

    ADAPTER = AdapterSpec(
        "lora_fa", init_kwargs={"rank": "rank", "alpha": "alpha", "dropout": "dropout_p"},
        param_groups={"lora_B": "lora_B"},
        # PEFT stores the same two matrices; loaded back from PEFT, it is a LoRALinear (PEFT
        # does not record that A was frozen: that is a training choice, not a function)
        peft=PeftFlavour({"use_dora": False}, {"lora_A.weight": "lora_A", "lora_B.weight": "lora_B"}),
        bench_peer=("lora", "lorakit"),
        trainable_params=lambda d_in, d_out, r: r * d_out)                      # B only

    def __init__(self, base_layer: nn.Linear, rank: int = 4, alpha: float = 1.0,
                 dropout: float = 0.0) -> None:
        super().__init__(base_layer, rank, alpha, dropout)    # A and B as Parameters, initialised
        A = self.lora_A.detach()
        del self.lora_A
        self.register_buffer("lora_A", A)                      # (r, in), frozen, saved

    def reset_parameters(self) -> None:
        super().reset_parameters()      # A Kaiming-uniform (as LoRA's: never trained, so it stays), B = 0

    def extra_repr(self) -> str:
        return super().extra_repr() + ", A frozen"


__all__ = ["LoRAFALinear"]
