# sample: swaps the init (A zeros, B Kaiming-random); the layer is still the base at init, but dL/dB = delta (Ax)^T = 0 and dL/dA = B^T delta x^T is nonzero only through a random B, so the adapter starts in the wrong place and B cannot learn at step one; caught by the visible test_gradients only
# expect: partial
# bug: initialisation (A zero / B random instead of B zero / A random)
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
        self.lora_A = nn.Parameter(torch.zeros(rank, in_features))
        self.lora_B = nn.Parameter(torch.empty(out_features, rank))
        nn.init.kaiming_uniform_(self.lora_B, a=math.sqrt(5))
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
