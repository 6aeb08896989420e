# sample: counts the adapted layers' own weights and biases (full fine-tuning), and the seed's 'Gaussian' init at std 1
# expect: partial
# fails: count
# %% [count_lora_params]
def count_lora_params(model, target_modules, rank):
    total = 0
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and any(name.endswith(t) for t in target_modules):
            total += sum(p.numel() for p in module.parameters())
    return total
# %% [fixed_lora_linear]
class FixedLoRALinear(nn.Module):
    def __init__(self, base_layer, rank=4, alpha=1, dropout=0.0):
        super().__init__()
        if rank < 1:
            raise ValueError("rank must be >= 1")
        self.base_layer = base_layer.requires_grad_(False)
        self.scaling = alpha / rank
        self.dropout = nn.Dropout(dropout)
        self.lora_A = nn.Linear(base_layer.in_features, rank, bias=False)
        self.lora_B = nn.Linear(rank, base_layer.out_features, bias=False)
        nn.init.normal_(self.lora_A.weight)
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x):
        return self.base_layer(x) + self.scaling * self.lora_B(self.lora_A(self.dropout(x)))
