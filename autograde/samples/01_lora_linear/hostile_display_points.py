# sample: hostile; a layer that outputs zeros and displays the number 1 while each test runs in the kernel (nbgrader reads a test cell's first displayed number as partial credit): the display is flagged, and the grade is the host's verdicts, where the layer runs in a probe process with no IPython (get_ipython is undefined there), so every check fails
# expect: zero
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
