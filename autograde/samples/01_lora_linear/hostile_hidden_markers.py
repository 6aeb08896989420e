# sample: hostile; a correct layer whose answer also carries nbgrader's hidden-test markers (in a comment): graded like any other, and flagged for a look
# expect: full
# flag: marker
# %% [lora_linear]
### BEGIN HIDDEN TESTS
# (nothing to see here)
### END HIDDEN TESTS
class LoRALinear(nn.Module):
    def __init__(self, base_layer, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer
        self.scaling = alpha / rank
        for p in self.base_layer.parameters():
            p.requires_grad = False
        self.lora_A = nn.Parameter(torch.empty(rank, base_layer.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base_layer.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=5 ** 0.5)

    def forward(self, x):
        return self.base_layer(x) + self.scaling * ((x @ self.lora_A.T) @ self.lora_B.T)
# %% [merge_lora]
@torch.no_grad()
def merge_lora(layer):
    layer.base_layer.weight += layer.scaling * layer.lora_B @ layer.lora_A
    return layer.base_layer
