# sample: count_lora_params compares only the last component of the module name (name.split(".")[-1] == target); FixedLoRALinear is right
# expect: partial
# bug: counting with the wrong matching rule: comparing only the last name component never matches a dotted target such as "attn.c_proj", so those layers are not counted (0 instead of the attention projections); PEFT matches the whole suffix after a dot
# %% [count_lora_params]
def count_lora_params(model, target_modules, rank):
    total = 0
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name.split(".")[-1] in target_modules:
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
        self.lora_A = nn.Parameter(torch.empty(rank, base_layer.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base_layer.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.base_layer(x) + self.scaling * (self.dropout(x) @ self.lora_A.T @ self.lora_B.T)
