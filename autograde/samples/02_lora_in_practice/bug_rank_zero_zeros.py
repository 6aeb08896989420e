# sample: keeps the seed's r = 0 branch, torch.zeros_like(x), instead of refusing the rank
# expect: partial
# fails: rank validation
# %% [count_lora_params]
def count_lora_params(model, target_modules, rank):
    return sum(rank * (m.in_features + m.out_features) for n, m in model.named_modules()
               if isinstance(m, nn.Linear) and any(n == t or n.endswith("." + t) for t in target_modules))
# %% [fixed_lora_linear]
import math


class FixedLoRALinear(nn.Module):
    def __init__(self, base_layer, rank=4, alpha=1, dropout=0.0):
        super().__init__()
        self.base_layer = base_layer.requires_grad_(False)
        self.r = rank
        self.scaling = alpha / rank if rank > 0 else 0.0
        self.lora_dropout_layer = nn.Dropout(dropout)
        if rank > 0:
            self.lora_A = nn.Linear(base_layer.in_features, rank, bias=False)
            self.lora_B = nn.Linear(rank, base_layer.out_features, bias=False)
            nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
            nn.init.zeros_(self.lora_B.weight)

    def forward(self, x):
        if hasattr(self, "lora_A"):
            update = self.lora_B(self.lora_A(self.lora_dropout_layer(x))) * self.scaling
            return self.base_layer(x) + update
        return torch.zeros_like(x)
