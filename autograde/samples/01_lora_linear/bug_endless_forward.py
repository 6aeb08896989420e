# sample: an endless loop inside forward; every check that calls it is cut off by the check's own time limit
# expect: partial
# fails: shapes, identity at init, update, scaling, low-rank order, gradients, merge
# %% [lora_linear]
class LoRALinear(nn.Module):
    def __init__(self, base_layer, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer
        self.scaling = alpha / rank
        self.lora_A = nn.Parameter(torch.randn(rank, base_layer.in_features) * 0.01)
        self.lora_B = nn.Parameter(torch.zeros(base_layer.out_features, rank))
        self.base_layer.requires_grad_(False)

    def forward(self, x):
        while True:
            pass
