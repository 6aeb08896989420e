# sample: count_lora_params is right; FixedLoRALinear applies dropout to x once, before both the base layer and the adapter
# expect: partial
# bug: dropout placed wrongly: it drops inputs of the frozen base path too, so in training mode the pretrained part of the output is perturbed; LoRA's dropout acts on the adapter's input only
# %% [count_lora_params]
def count_lora_params(model, target_modules, rank):
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
        self.base_layer = base_layer.requires_grad_(False)
        self.scaling = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base_layer.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base_layer.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        x = self.dropout(x)
        return self.base_layer(x) + self.scaling * (x @ self.lora_A.T @ self.lora_B.T)
