# sample: einsum everywhere, magnitude as a (out, 1) column, norm computed under torch.no_grad()
# expect: full
# %% [dora_linear]
class DoRALinear(nn.Module):
    def __init__(self, base_layer, rank=8, alpha=16):
        super().__init__()
        self.base_layer = base_layer
        self.rank, self.alpha = rank, alpha
        self.scaling = alpha / rank
        out_f, in_f = base_layer.weight.shape
        self.base_layer.requires_grad_(False)
        self.down = nn.Parameter(torch.empty(rank, in_f).uniform_(-in_f ** -0.5, in_f ** -0.5))
        self.up = nn.Parameter(torch.zeros(out_f, rank))
        with torch.no_grad():
            self.mag = nn.Parameter(torch.einsum("oi,oi->o", base_layer.weight, base_layer.weight).sqrt()[:, None])

    def forward(self, x):
        W = self.base_layer.weight
        with torch.no_grad():
            V = W + self.scaling * torch.einsum("or,ri->oi", self.up, self.down)
            n = torch.einsum("oi,oi->o", V, V).sqrt()
        base = torch.einsum("...i,oi->...o", x, W)
        delta = self.scaling * torch.einsum("...r,or->...o", torch.einsum("...i,ri->...r", x, self.down), self.up)
        y = (base + delta) * (self.mag[:, 0] / n)
        b = self.base_layer.bias
        return y if b is None else y + b
