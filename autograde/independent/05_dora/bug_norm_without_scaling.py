# sample: the direction uses V = W + sBA but the row norm is computed from W + BA (the scaling forgotten in the norm)
# expect: partial
# bug: wrong scaling in the norm: ‖W + BA‖_row is not the norm of V = W + sBA, so the rows of the direction are not unit vectors whenever s ≠ 1 and B ≠ 0; the scaling must enter the direction and the norm alike
# %% [dora_linear]
class DoRALinear(nn.Module):
    def __init__(self, base_layer, rank=8, alpha=16):
        super().__init__()
        self.base_layer = base_layer
        self.rank = rank
        self.alpha = alpha
        self.scaling = alpha / rank
        in_features = base_layer.in_features
        out_features = base_layer.out_features
        self.base_layer.requires_grad_(False)
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.magnitude = nn.Parameter(base_layer.weight.detach().norm(dim=1).clone())

    def forward(self, x):
        delta = self.lora_B @ self.lora_A
        W = self.base_layer.weight
        n = (W + delta).norm(dim=1).detach()
        y = (self.magnitude / n) * (x @ (W + self.scaling * delta).T)
        return y if self.base_layer.bias is None else y + self.base_layer.bias
