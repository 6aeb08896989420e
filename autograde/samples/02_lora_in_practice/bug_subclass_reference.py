# sample: wraps lorakit's reference LoRALinear instead of repairing the seed's layer
# expect: partial
# fails: not reference
# %% [count_lora_params]
def count_lora_params(model, target_modules, rank):
    return sum(rank * (m.in_features + m.out_features) for n, m in model.named_modules()
               if isinstance(m, nn.Linear) and any(n == t or n.endswith("." + t) for t in target_modules))
# %% [fixed_lora_linear]
class FixedLoRALinear(lorakit.LoRALinear):
    def __init__(self, base_layer, rank=4, alpha=1, dropout=0.0):
        if rank < 1:
            raise ValueError("rank must be >= 1")
        super().__init__(base_layer, rank=rank, alpha=alpha, dropout=dropout)
