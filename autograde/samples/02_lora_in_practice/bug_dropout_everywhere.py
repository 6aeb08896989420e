# sample: applies dropout to the whole output, so the pretrained path is dropped out too
# expect: partial
# fails: dropout
# %% [count_lora_params]
def count_lora_params(model, target_modules, rank):
    total = 0
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name.split(".")[-1] in target_modules:
            total += rank * (module.in_features + module.out_features)
        elif isinstance(module, nn.Linear) and any(name.endswith("." + t) for t in target_modules):
            total += rank * (module.in_features + module.out_features)
    return total
# %% [fixed_lora_linear]
import math


class FixedLoRALinear(nn.Module):
    def __init__(self, base_layer, rank=4, alpha=1, dropout=0.0):
        super().__init__()
        if rank < 1:
            raise ValueError("rank must be >= 1")
        self.base_layer = base_layer.requires_grad_(False)
        self.scaling = alpha / rank
        self.dropout = nn.Dropout(dropout)
        self.lora_A = nn.Linear(base_layer.in_features, rank, bias=False)
        self.lora_B = nn.Linear(rank, base_layer.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x):
        return self.dropout(self.base_layer(x) + self.scaling * self.lora_B(self.lora_A(x)))
