# sample: count_lora_params through a _matches helper and a generator, accepting a single string as a one-element list; FixedLoRALinear with a hand-written inverted dropout (Bernoulli keep mask divided by 1 - p, only in training mode, the base sees the clean x), A from nn.init.kaiming_uniform_, zero B, extra helpers delta_weight() and extra_repr()
# expect: full
# %% [count_lora_params]
def _matches(name, targets):
    return any(name == t or name.endswith("." + t) for t in targets)


def count_lora_params(model, target_modules, rank):
    # Sum rank * (in_features + out_features) over the matching nn.Linear modules.
    if isinstance(target_modules, str):
        target_modules = [target_modules]
    return sum(rank * (m.in_features + m.out_features)
               for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and _matches(name, target_modules))
# %% [fixed_lora_linear]
import math


class FixedLoRALinear(nn.Module):
    def __init__(self, base_layer, rank=4, alpha=1, dropout=0.0):
        super().__init__()
        if rank < 1:
            raise ValueError(f"FixedLoRALinear needs rank >= 1 (got {rank!r})")
        self.base_layer = base_layer.requires_grad_(False)
        self.rank, self.alpha, self.dropout = rank, alpha, float(dropout)
        self.scaling = alpha / rank
        out_f, in_f = base_layer.weight.shape
        factory = dict(dtype=base_layer.weight.dtype, device=base_layer.weight.device)
        self.A = nn.Parameter(nn.init.kaiming_uniform_(torch.empty(rank, in_f, **factory), a=math.sqrt(5)))
        self.B = nn.Parameter(torch.zeros(out_f, rank, **factory))

    def _drop(self, x):
        if not self.training or self.dropout == 0.0:
            return x
        if self.dropout >= 1.0:
            return torch.zeros_like(x)
        keep = torch.empty_like(x).bernoulli_(1.0 - self.dropout)
        return x * keep / (1.0 - self.dropout)

    def delta_weight(self):
        return self.scaling * (self.B @ self.A)

    def extra_repr(self):
        return f"rank={self.rank}, alpha={self.alpha}, dropout={self.dropout}"

    def forward(self, x):
        # x: (..., in_features) -> (..., out_features)
        return self.base_layer(x) + self.scaling * ((self._drop(x) @ self.A.T) @ self.B.T)
