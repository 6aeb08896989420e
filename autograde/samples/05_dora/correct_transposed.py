# sample: factors stored transposed, A (in, r) and B (r, out); x @ A @ B; norm computed from V.T along dim 0
# expect: full
# %% [dora_linear]
class DoRALinear(nn.Module):
    def __init__(self, base_layer, rank=8, alpha=16):
        super().__init__()
        self.base_layer = base_layer
        self.scaling = alpha / rank
        d_in, d_out = base_layer.in_features, base_layer.out_features
        self.A = nn.Parameter(torch.randn(d_in, rank) / d_in ** 0.5)
        self.B = nn.Parameter(torch.zeros(rank, d_out))
        self.magnitude = nn.Parameter(base_layer.weight.detach().T.norm(dim=0))
        self.base_layer.weight.requires_grad_(False)
        if base_layer.bias is not None:
            base_layer.bias.requires_grad_(False)

    def forward(self, x):
        Vt = self.base_layer.weight.T + self.scaling * (self.A @ self.B)    # (in, out)
        col_norm = Vt.norm(dim=0).detach()                                  # one per output
        y = (x @ Vt) * (self.magnitude / col_norm)
        if self.base_layer.bias is not None:
            y = y + self.base_layer.bias
        return y
