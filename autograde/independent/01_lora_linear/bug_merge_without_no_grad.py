# sample: a correct LoRALinear; merge_lora adds s·BA into layer.base_layer.weight in place, as the seed does, but without torch.no_grad()
# expect: partial
# bug: merge without torch.no_grad(): the in-place add records the product of the trainable A and B in the graph, so the merged weight gets a grad_fn (autograd history) and later backward passes send gradients into A and B through the "frozen" weight
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
        return self.base_layer(x) + self.scaling * ((x @ self.lora_A.T) @ self.lora_B.T)
# %% [merge_lora]
def merge_lora(layer):
    base = layer.base_layer
    base.weight.add_(layer.scaling * layer.lora_B @ layer.lora_A)
    return base
