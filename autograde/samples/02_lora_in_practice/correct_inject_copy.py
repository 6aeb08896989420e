# sample: correct; counts by injecting lorakit adapters into a deep copy, at exactly the nn.Linear layers the targets name; transposed factors with einsum
# expect: full
# %% [count_lora_params]
import copy

from lorakit.tuning import inject_adapters, mark_only_adapters_trainable


def count_lora_params(model, target_modules, rank):
    # the nn.Linear layers a target names (PEFT's rule: the full name, or its last parts)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)
             and any(n == t or n.endswith("." + t) for t in target_modules)]
    if not names:
        return 0
    clone = copy.deepcopy(model)
    inject_adapters(clone, lorakit.LoRALinear, target_modules=names, rank=rank)
    mark_only_adapters_trainable(clone)
    return sum(p.numel() for p in clone.parameters() if p.requires_grad)
# %% [fixed_lora_linear]
class FixedLoRALinear(nn.Module):
    def __init__(self, base_layer, rank=4, alpha=1, dropout=0.0):
        super().__init__()
        if rank < 1:
            raise ValueError("a LoRA layer needs rank >= 1")
        self.base_layer = base_layer.requires_grad_(False)
        self.scaling = alpha / rank
        self.drop = nn.Dropout(dropout)
        self.down = nn.Parameter(torch.empty(base_layer.in_features, rank))   # (in, r)
        nn.init.kaiming_uniform_(self.down.T, a=5 ** 0.5)
        self.up = nn.Parameter(torch.zeros(rank, base_layer.out_features))    # (r, out)

    def forward(self, x):
        h = torch.einsum("...i,ir->...r", self.drop(x), self.down)
        return self.base_layer(x) + self.scaling * torch.einsum("...r,ro->...o", h, self.up)
