# sample: repairs the seed's missing import, shapes, rank check and scaling but keeps its forward, which returns only the update s B A dropout(x): the layer wraps base_layer (frozen, so the trainable count is right) and never calls it, so at init it outputs zeros instead of the pretrained layer's output; count_lora_params is correct
# expect: partial
# bug: forward returns only the update (base path missing, seed 002's main bug not fixed)
# %% [count_lora_params]
def count_lora_params(model, target_modules, rank):
    # Sum rank * (in_features + out_features) over the matching nn.Linear modules.
    total = 0
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and any(name == t or name.endswith("." + t) for t in target_modules):
            total += rank * (module.in_features + module.out_features)
    return total
# %% [fixed_lora_linear]
import math


class FixedLoRALinear(nn.Module):
    def __init__(self, base_layer, rank=4, alpha=1, dropout=0.0):
        super().__init__()
        if rank < 1:
            raise ValueError("rank must be >= 1")
        self.base_layer = base_layer
        self.base_layer.requires_grad_(False)
        self.scaling = alpha / rank
        self.lora_dropout = nn.Dropout(p=dropout) if dropout > 0 else nn.Identity()
        self.lora_A = nn.Linear(base_layer.in_features, rank, bias=False)
        self.lora_B = nn.Linear(rank, base_layer.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x):
        # x: (..., in_features) -> (..., out_features)
        lora_output = self.lora_B(self.lora_A(self.lora_dropout(x)))
        return lora_output * self.scaling
