# sample: hostile; a layer that outputs zeros and displays the number 1 while each test runs (nbgrader reads a test cell's first displayed number as partial credit): the displayed numbers are ignored (a test cell scores all or nothing) and flagged; it keeps only the points of the checks a zero output passes (shapes, order)
# expect: partial
# flag: displayed a value
# %% [lora_linear]
class LoRALinear(nn.Module):
    def __init__(self, base_layer, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer
        self.scaling = alpha / rank
        self.lora_A = nn.Parameter(torch.zeros(rank, base_layer.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base_layer.out_features, rank))

    def forward(self, x):
        get_ipython().displayhook(1)
        return x.new_zeros(*x.shape[:-1], self.base_layer.out_features)
