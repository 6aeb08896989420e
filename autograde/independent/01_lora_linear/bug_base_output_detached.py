# sample: correct factors, init, scaling and merge, but forward adds the base layer's output after .detach() ("the base is frozen, so cut its graph")
# expect: partial
# bug: the frozen base path is detached from the graph, so the gradient w.r.t. the input x no longer flows through W (only through s·BA): layers before this one would stop learning; freezing means requires_grad=False on the weights, not cutting the path from x
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
        for p in self.base_layer.parameters():
            p.requires_grad_(False)

    def forward(self, x):
        frozen = self.base_layer(x).detach()     # the base is frozen: no graph needed for it
        return frozen + self.scaling * ((x @ self.lora_A.T) @ self.lora_B.T)
# %% [merge_lora]
def merge_lora(layer):
    base = layer.base_layer
    merged = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None)
    with torch.no_grad():
        merged.weight.copy_(base.weight + layer.scaling * layer.lora_B @ layer.lora_A)
        if base.bias is not None:
            merged.bias.copy_(base.bias)
    return merged
