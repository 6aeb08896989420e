# sample: adapters stored transposed (A_t (in, r) with orthonormal columns from nn.init.orthogonal_, B_t (r, out) zeros) with einsum; the detached row norms come from the expansion ||W_i||^2 + 2s<W_i, (BA)_i> + s^2 B_i^T (A A^T) B_i, so no out x in matrix is formed, and the factored forward c * (Wx + s B(Ax)) + b
# expect: full
# %% [hylorada_linear]
class HyLoRADALinear(nn.Module):
    def __init__(self, base_layer, rank=8, alpha=16):
        super().__init__()
        self.base_layer = base_layer  # the frozen nn.Linear; weight (out_features, in_features)
        self.rank = rank
        self.scaling = alpha / rank
        in_features, out_features = base_layer.in_features, base_layer.out_features
        base_layer.weight.requires_grad_(False)
        if base_layer.bias is not None:
            base_layer.bias.requires_grad_(False)
        f = dict(dtype=base_layer.weight.dtype, device=base_layer.weight.device)
        A_t = torch.empty(in_features, rank, **f)
        nn.init.orthogonal_(A_t)                        # orthonormal columns: A = A_t.T has orthonormal rows
        self.A_t = nn.Parameter(A_t)
        self.B_t = nn.Parameter(torch.zeros(rank, out_features, **f))
        m0 = base_layer.weight.detach().pow(2).sum(dim=1).sqrt()
        self.magnitude = nn.Parameter(m0.clone())
        self.register_buffer("m_init", m0.clone())
        self.g = nn.Parameter(torch.zeros((), **f))
        self.b_res = nn.Parameter(torch.full((), 0.1, **f))

    def _row_norms(self):
        with torch.no_grad():
            W, A_t, B_t, s = self.base_layer.weight, self.A_t, self.B_t, self.scaling
            w2 = W.pow(2).sum(1)                                        # ||W_i||^2
            cross = torch.einsum("oi,ir,ro->o", W, A_t, B_t)            # <W_i, (BA)_i>
            gram = A_t.T @ A_t                                          # (r, r)
            d2 = torch.einsum("ro,rq,qo->o", B_t, gram, B_t)            # ||(BA)_i||^2
            return (w2 + 2 * s * cross + s * s * d2).clamp_min(0).sqrt()

    def forward(self, x):
        # x: (..., in_features) -> (..., out_features)
        W = self.base_layer.weight
        z = torch.einsum("...i,oi->...o", x, W) + self.scaling * torch.einsum(
            "...r,ro->...o", torch.einsum("...i,ir->...r", x, self.A_t), self.B_t)
        gamma, beta = torch.sigmoid(self.g), torch.sigmoid(self.b_res)
        m_eff = self.m_init + gamma * (self.magnitude - self.m_init)
        c = 1 + (1 - beta) * (m_eff / self._row_norms() - 1)
        out = c * z
        return out if self.base_layer.bias is None else out + self.base_layer.bias
