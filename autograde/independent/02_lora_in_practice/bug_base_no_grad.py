# sample: computes the frozen base path under torch.no_grad() ("the base is frozen anyway"), so A and B still train but no gradient reaches x through W: in TinyLM, where the layer sits inside the network, every adapter before it loses the gradient that should flow through this layer's pretrained weight; outputs are exact; count_lora_params is correct
# expect: partial
# bug: base path under no_grad (no gradient to the input through W)
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
        self.dropout = nn.Dropout(dropout)
        self.lora_A = nn.Parameter(torch.empty(rank, base_layer.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base_layer.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x):
        # x: (..., in_features) -> (..., out_features)
        with torch.no_grad():
            base_out = self.base_layer(x)
        return base_out + self.scaling * (self.dropout(x) @ self.lora_A.T) @ self.lora_B.T
