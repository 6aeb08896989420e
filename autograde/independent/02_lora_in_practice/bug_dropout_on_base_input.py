# sample: applies dropout once to x and feeds the dropped-out x to both paths, base_layer(dropout(x)) + s B A dropout(x), "regularising the whole layer"; identical at dropout = 0 and in eval mode, but in training with dropout > 0 the frozen pretrained path is perturbed too (base outputs rescaled by 1/(1 - p) on random inputs) instead of only the adapter's input; count_lora_params is correct
# expect: partial
# bug: dropout in the wrong place (on the base path too, not only the adapter input)
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
        self.lora_dropout = nn.Dropout(dropout)
        self.lora_A = nn.Linear(base_layer.in_features, rank, bias=False)
        self.lora_B = nn.Linear(rank, base_layer.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x):
        # x: (..., in_features) -> (..., out_features)
        x = self.lora_dropout(x)
        return self.base_layer(x) + self.scaling * self.lora_B(self.lora_A(x))
