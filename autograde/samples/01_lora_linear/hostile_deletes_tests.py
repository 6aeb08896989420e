# sample: hostile; a correct solution whose author deleted every test cell: nbgrader puts them back and runs them, so it earns full marks (and an ungraded "needs manual grade" without add_missing_cells)
# expect: full
# %% [lora_linear]
class LoRALinear(nn.Module):
    def __init__(self, base_layer, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer.requires_grad_(False)
        self.scaling = alpha / rank
        self.lora_A = nn.Parameter(torch.randn(rank, base_layer.in_features) * 0.01)
        self.lora_B = nn.Parameter(torch.zeros(base_layer.out_features, rank))

    def forward(self, x):
        return self.base_layer(x) + self.scaling * ((x @ self.lora_A.T) @ self.lora_B.T)
# %% [merge_lora]
@torch.no_grad()
def merge_lora(layer):
    layer.base_layer.weight += layer.scaling * layer.lora_B @ layer.lora_A
    return layer.base_layer
# %% [delete:test_shapes]
# %% [delete:test_frozen]
# %% [delete:test_identity]
# %% [delete:test_update]
# %% [delete:test_scaling]
# %% [delete:test_order]
# %% [delete:test_gradients]
# %% [delete:test_merge]
