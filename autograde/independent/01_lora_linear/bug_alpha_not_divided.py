# sample: stores self.scaling = alpha / rank as the contract asks but multiplies the update by self.alpha in forward (and in merge), so the update is rank times too large and changing the rank silently changes the effective learning rate; caught by the visible test_update and test_scaling
# expect: partial
# bug: wrong scaling (alpha used instead of alpha / rank)
# %% [lora_linear]
import math


class LoRALinear(nn.Module):
    def __init__(self, base_layer, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer  # the frozen nn.Linear; weight (out_features, in_features)
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
        # x: (..., in_features) -> (..., out_features)
        lora_out = (x @ self.lora_A.T) @ self.lora_B.T
        return self.base_layer(x) + self.alpha * lora_out
# %% [merge_lora]
def merge_lora(layer):
    # Return an nn.Linear that computes what `layer` computes.
    base = layer.base_layer
    merged = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None)
    with torch.no_grad():
        merged.weight.copy_(base.weight + layer.alpha * layer.lora_B @ layer.lora_A)
        if base.bias is not None:
            merged.bias.copy_(base.bias)
    return merged
