# sample: a correct layer, but merge_lora adds the update into base_layer.weight in place without torch.no_grad(), so the merged weight gets a grad_fn (it is no longer a leaf) and a backward through the merged layer sends gradients into A and B; caught by the visible test_merge only (grad_fn message)
# expect: partial
# bug: merge leaves autograd history
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
        return self.base_layer(x) + self.scaling * (x @ self.lora_A.T @ self.lora_B.T)
# %% [merge_lora]
def merge_lora(layer):
    # Return an nn.Linear that computes what `layer` computes.
    w = layer.base_layer.weight
    w.add_(layer.scaling * layer.lora_B @ layer.lora_A)
    return layer.base_layer
