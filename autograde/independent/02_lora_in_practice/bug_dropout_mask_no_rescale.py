# sample: count_lora_params is right; FixedLoRALinear drops adapter inputs with a hand-made Bernoulli mask in training mode but does not divide by 1 - p (eval mode uses x unchanged)
# expect: partial
# bug: dropout without rescale: in training the kept inputs are not multiplied by 1/(1-p), so the expected adapter update in training is (1-p) times the one in eval mode (inverted dropout keeps them equal)
# %% [count_lora_params]
def count_lora_params(model, target_modules, rank):
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
        h = x
        if self.training and self.dropout_p > 0:
            keep = (torch.rand_like(x) >= self.dropout_p).to(x.dtype)
            h = x * keep
        return self.base_layer(x) + self.scaling * (h @ self.lora_A.T @ self.lora_B.T)
