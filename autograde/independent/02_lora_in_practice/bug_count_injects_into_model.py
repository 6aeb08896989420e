# sample: "let lorakit count": finds the matching nn.Linear names correctly, then injects lorakit.LoRALinear adapters on exactly those into the model it was given (no copy.deepcopy), freezes everything else and sums the trainable parameters; the numbers are right on the first call, but the caller's model is changed (its layers are wrapped, its base weights frozen) although the contract says to count from the shapes and leave the model unchanged, and a second call on the same model returns 0 for the already wrapped targets and counts the first call's adapters as trainable for the others; FixedLoRALinear is correct
# expect: partial
# bug: counting mutates the model (adapters injected in place instead of counting from shapes)
# %% [count_lora_params]
def count_lora_params(model, target_modules, rank):
    # Sum rank * (in_features + out_features) over the matching nn.Linear modules.
    names = [name for name, module in model.named_modules()
             if isinstance(module, nn.Linear) and any(name == t or name.endswith("." + t) for t in target_modules)]
    if not names:
        return 0
    # let lorakit do the bookkeeping: wrap exactly those layers and count what trains
    inject_adapters(model, lorakit.LoRALinear, target_modules=names, rank=rank, alpha=rank)
    mark_only_adapters_trainable(model)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
# %% [fixed_lora_linear]
import math


class FixedLoRALinear(nn.Module):
    def __init__(self, base_layer, rank=4, alpha=1, dropout=0.0):
        super().__init__()
        if rank < 1:
            raise ValueError("rank must be >= 1")
        self.base_layer = base_layer
        self.base_layer.requires_grad_(False)
        self.scaling = alpha / rank
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        w = base_layer.weight
        self.lora_A = nn.Parameter(torch.empty(rank, base_layer.in_features, dtype=w.dtype, device=w.device))
        self.lora_B = nn.Parameter(torch.zeros(base_layer.out_features, rank, dtype=w.dtype, device=w.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x):
        # x: (..., in_features) -> (..., out_features)
        return self.base_layer(x) + self.scaling * (self.dropout(x) @ self.lora_A.T @ self.lora_B.T)
