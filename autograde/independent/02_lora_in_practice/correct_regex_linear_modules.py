# sample: count_lora_params matches with a regular expression (^|\.)target$ and counts each matching nn.Linear once via in_features/out_features; FixedLoRALinear uses two bias-free nn.Linear adapters and functional dropout F.dropout(x, p, self.training) on the adapter input only
# expect: full
# %% [count_lora_params]
import re


def count_lora_params(model, target_modules, rank):
    patterns = [re.compile(r"(^|\.)" + re.escape(t) + r"$") for t in target_modules]
    total = 0
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and any(p.search(name) for p in patterns):
            total += rank * module.in_features + rank * module.out_features
    return total
# %% [fixed_lora_linear]
import math

import torch.nn.functional as F


class FixedLoRALinear(nn.Module):
    def __init__(self, base_layer, rank=4, alpha=1, dropout=0.0):
        super().__init__()
        if not rank >= 1:
            raise ValueError("LoRA needs rank >= 1")
        self.base_layer = base_layer
        for p in self.base_layer.parameters():
            p.requires_grad = False
        self.scaling = alpha / rank
        self.p = float(dropout)
        self.lora_A = nn.Linear(base_layer.in_features, rank, bias=False)
        self.lora_B = nn.Linear(rank, base_layer.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x):
        dropped = F.dropout(x, p=self.p, training=self.training)
        return self.base_layer(x) + self.lora_B(self.lora_A(dropped)) * self.scaling
