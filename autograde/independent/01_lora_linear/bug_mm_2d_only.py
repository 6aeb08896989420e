# sample: forward written with torch.mm (and torch.addmm for the base), which only accepts 2-D inputs; correct for (batch, in) inputs
# expect: partial
# bug: shape handling only for 2-D input: torch.mm / torch.addmm reject (batch, seq, in) and deeper inputs, while the contract promises x of shape (..., in_features)
# %% [lora_linear]
import math


class LoRALinear(nn.Module):
    def __init__(self, base_layer, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer
        self.rank = rank
        self.alpha = alpha
        self.scaling = alpha / rank
        in_features = base_layer.in_features
        out_features = base_layer.out_features
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.base_layer.requires_grad_(False)

    def forward(self, x):
        W, b = self.base_layer.weight, self.base_layer.bias
        base = torch.mm(x, W.t()) if b is None else torch.addmm(b, x, W.t())
        return base + self.scaling * torch.mm(torch.mm(x, self.lora_A.t()), self.lora_B.t())
# %% [merge_lora]
def merge_lora(layer):
    base = layer.base_layer
    merged = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None)
    with torch.no_grad():
        merged.weight.copy_(base.weight + layer.scaling * layer.lora_B @ layer.lora_A)
        if base.bias is not None:
            merged.bias.copy_(base.bias)
    return merged
