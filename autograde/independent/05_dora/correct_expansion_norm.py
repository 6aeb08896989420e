# sample: adapters stored transposed ((in, r) and (r, out)) with einsum, the row norm computed by the expansion ||W_i||^2 + 2s<W_i,(BA)_i> + s^2||(BA)_i||^2 of section 8 on detached tensors, so no out x in matrix is formed in forward
# expect: full
# %% [dora_linear]
class DoRALinear(nn.Module):
    def __init__(self, base_layer, rank=8, alpha=16):
        super().__init__()
        self.base_layer = base_layer  # the frozen nn.Linear; weight (out_features, in_features)
        self.rank = rank
        self.alpha = alpha
        self.scaling = alpha / rank
        in_features = base_layer.in_features
        out_features = base_layer.out_features
        base_layer.weight.requires_grad_(False)
        if base_layer.bias is not None:
            base_layer.bias.requires_grad_(False)
        W = base_layer.weight.detach()
        bound = 1 / math.sqrt(in_features)
        self.A_t = nn.Parameter(torch.empty(in_features, rank, dtype=W.dtype, device=W.device).uniform_(-bound, bound))
        self.B_t = nn.Parameter(torch.zeros(rank, out_features, dtype=W.dtype, device=W.device))
        self.m = nn.Parameter(torch.sqrt((W * W).sum(dim=1)))

    def row_norm(self):
        # ||W + s B A||_row without forming the (out, in) matrix; a constant for autograd
        with torch.no_grad():
            W = self.base_layer.weight
            A, B = self.A_t.T, self.B_t.T                    # (r, in), (out, r)
            s = self.scaling
            w_sq = W.pow(2).sum(dim=1)
            cross = (B * (W @ A.T)).sum(dim=1)
            ba_sq = ((B @ (A @ A.T)) * B).sum(dim=1)
            return (w_sq + 2 * s * cross + s * s * ba_sq).clamp_min(0).sqrt()

    def forward(self, x):
        # x: (..., in_features) -> (..., out_features)
        W = self.base_layer.weight
        wx = torch.einsum("...i,oi->...o", x, W)
        bax = torch.einsum("...r,ro->...o", torch.einsum("...i,ir->...r", x, self.A_t), self.B_t)
        y = (self.m / self.row_norm()) * (wx + self.scaling * bax)
        if self.base_layer.bias is not None:
            y = y + self.base_layer.bias
        return y
