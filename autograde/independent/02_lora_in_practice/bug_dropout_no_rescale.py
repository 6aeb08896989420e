# sample: hand-written dropout that zeroes inputs with probability p in training mode (and is off in eval) but does not divide the kept ones by 1 - p, so the adapter sees inputs (1 - p) times smaller on average in training than in eval: the update learned in training is applied 1/(1 - p) times too strongly at inference; exact at dropout = 0; count_lora_params is correct
# expect: partial
# bug: dropout without the 1/(1 - p) rescale (train and eval expectations differ)
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
        self.base_layer = base_layer.requires_grad_(False)
        self.scaling = alpha / rank
        self.dropout_p = dropout
        self.lora_A = nn.Parameter(torch.empty(rank, base_layer.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base_layer.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x):
        # x: (..., in_features) -> (..., out_features)
        if self.training and self.dropout_p > 0:
            keep = (torch.rand_like(x) >= self.dropout_p).to(x.dtype)
            x_a = x * keep
        else:
            x_a = x
        return self.base_layer(x) + self.scaling * (x_a @ self.lora_A.T @ self.lora_B.T)
