# sample: copy-paste slip that gives B shape (in_features, rank) instead of (out_features, rank); on square layers everything runs and matches, on the 24 -> 10 probes the adapter output has the wrong width (and the trainable count is r(in + in)); fails EVERY visible test (shapes, frozen, identity, update, scaling, order, gradients, merge), so it is expected to score zero on the autograded part
# expect: zero
# bug: transposed/confused dimensions that only work for square layers
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
        self.lora_B = nn.Parameter(torch.zeros(in_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.base_layer.requires_grad_(False)

    def forward(self, x):
        # x: (..., in_features) -> (..., out_features)
        return self.base_layer(x) + self.scaling * ((x @ self.lora_A.T) @ self.lora_B.T)
# %% [merge_lora]
def merge_lora(layer):
    # Return an nn.Linear that computes what `layer` computes.
    base = layer.base_layer
    merged = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None)
    with torch.no_grad():
        merged.weight.copy_(base.weight + layer.scaling * layer.lora_B @ layer.lora_A)
        if base.bias is not None:
            merged.bias.copy_(base.bias)
    return merged
