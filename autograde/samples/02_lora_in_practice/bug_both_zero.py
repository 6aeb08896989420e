# sample: starts A and B at zero, like the seed's DynamicRankLoRA: no gradient ever reaches either
# expect: partial
# fails: gradients
# %% [count_lora_params]
def count_lora_params(model, target_modules, rank):
    return sum(rank * (m.in_features + m.out_features) for n, m in model.named_modules()
               if isinstance(m, nn.Linear) and any(n == t or n.endswith("." + t) for t in target_modules))
# %% [fixed_lora_linear]
class FixedLoRALinear(nn.Module):
    def __init__(self, base_layer, rank=4, alpha=1, dropout=0.0):
        super().__init__()
        if rank < 1:
            raise ValueError("rank must be >= 1")
        self.base_layer = base_layer.requires_grad_(False)
        self.scaling = alpha / rank
        self.dropout = nn.Dropout(dropout)
        self.lora_A = nn.Parameter(torch.zeros(base_layer.in_features, rank))
        self.lora_B = nn.Parameter(torch.zeros(rank, base_layer.out_features))

    def forward(self, x):
        return self.base_layer(x) + self.scaling * (self.dropout(x) @ self.lora_A) @ self.lora_B
