# sample: writes its own dropout with torch.bernoulli and the 1/(1 - p) rescale but never looks at self.training, so the adapter's input is still randomly masked after model.eval(): inference is random and two eval calls on the same x differ (at dropout = 0 everything is exact); count_lora_params is correct
# expect: partial
# bug: dropout left on in eval() mode
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
        for p in base_layer.parameters():
            p.requires_grad = False
        self.scaling = alpha / rank
        self.p = dropout
        self.lora_A = nn.Parameter(torch.empty(rank, base_layer.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base_layer.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x):
        # x: (..., in_features) -> (..., out_features)
        xd = x
        if self.p > 0:
            mask = torch.bernoulli(torch.full_like(x, 1 - self.p))
            xd = x * mask / (1 - self.p)
        return self.base_layer(x) + self.scaling * (xd @ self.lora_A.T) @ self.lora_B.T
