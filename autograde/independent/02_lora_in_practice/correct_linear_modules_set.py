# sample: count_lora_params first collects the set of matching nn.Linear names (so a layer two targets match is counted once) and sums r * (out + in) from weight.shape; FixedLoRALinear keeps the seed's two bias-free nn.Linear adapters (lora_A in -> r, lora_B r -> out) with its reset_parameters (Kaiming-uniform A, zero B), validates rank before anything else and uses nn.Dropout on the adapter input
# expect: full
# %% [count_lora_params]
def count_lora_params(model, target_modules, rank):
    # Sum rank * (in_features + out_features) over the matching nn.Linear modules.
    targets = list(target_modules)
    matched = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            for t in targets:
                if name == t or name.endswith("." + t):
                    matched[name] = module
                    break
    total = 0
    for module in matched.values():
        out_f, in_f = module.weight.shape
        total += rank * (out_f + in_f)
    return int(total)
# %% [fixed_lora_linear]
import math


class FixedLoRALinear(nn.Module):
    def __init__(self, base_layer, rank=4, alpha=1, dropout=0.0):
        super().__init__()
        if int(rank) != rank or rank < 1:
            raise ValueError("rank must be a positive integer (the seed's r = 0 divides by zero)")
        if not 0.0 <= dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")
        self.base_layer = base_layer
        for p in self.base_layer.parameters():
            p.requires_grad = False
        self.r = int(rank)
        self.lora_alpha = alpha
        self.scaling = alpha / rank
        self.lora_dropout = nn.Dropout(dropout)
        dev, dt = base_layer.weight.device, base_layer.weight.dtype
        self.lora_A = nn.Linear(base_layer.in_features, self.r, bias=False, device=dev, dtype=dt)
        self.lora_B = nn.Linear(self.r, base_layer.out_features, bias=False, device=dev, dtype=dt)
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))   # uniform, as the seed's code does
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x):
        # x: (..., in_features) -> (..., out_features)
        update = self.lora_B(self.lora_A(self.lora_dropout(x)))
        return self.base_layer(x) + update * self.scaling
