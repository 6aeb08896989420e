# sample: two bias-free nn.Linear adapters (as in the seed's Attempt #2) with a small-std normal init for A, forward lora_B(lora_A(x)), merge folds the update into base_layer in place under torch.no_grad and returns it
# expect: full
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
        self.base_layer.requires_grad_(False)
        self.lora_A = nn.Linear(in_features, rank, bias=False)   # weight (rank, in)
        self.lora_B = nn.Linear(rank, out_features, bias=False)  # weight (out, rank)
        self.lora_A.to(base_layer.weight.device, base_layer.weight.dtype)
        self.lora_B.to(base_layer.weight.device, base_layer.weight.dtype)
        nn.init.normal_(self.lora_A.weight, std=1 / math.sqrt(in_features))
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x):
        # x: (..., in_features) -> (..., out_features)
        return self.base_layer(x) + self.scaling * self.lora_B(self.lora_A(x))
# %% [merge_lora]
def merge_lora(layer):
    # Return an nn.Linear that computes what `layer` computes.
    base = layer.base_layer
    with torch.no_grad():
        delta = layer.lora_B.weight @ layer.lora_A.weight        # (out, in)
        base.weight += layer.scaling * delta
    return base
