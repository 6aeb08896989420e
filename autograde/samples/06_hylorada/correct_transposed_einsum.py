# sample: A stored (in, r) and B (r, out), einsum; logits of shape (1,), blend declared before the gate; m_init recomputed from the frozen W
# expect: full
# %% [hylorada_linear]
class HyLoRADALinear(nn.Module):
    def __init__(self, base_layer, rank=8, alpha=16):
        super().__init__()
        self.base_layer = base_layer.requires_grad_(False)
        self.scaling = alpha / rank
        self.blend_logit = nn.Parameter(torch.full((1,), 0.1))
        self.gate_logit = nn.Parameter(torch.zeros(1))
        self.a = nn.Parameter(nn.init.orthogonal_(torch.empty(base_layer.in_features, rank)))
        self.b = nn.Parameter(torch.zeros(rank, base_layer.out_features))
        self.mag = nn.Parameter(base_layer.weight.detach().norm(dim=1))

    def forward(self, x):
        W = self.base_layer.weight                                   # (out, in)
        V = W + self.scaling * torch.einsum("ir,ro->oi", self.a, self.b)
        n = torch.linalg.vector_norm(V.detach(), dim=1)
        m0 = torch.linalg.vector_norm(W, dim=1)                      # W is frozen: m_init
        gate, beta = torch.sigmoid(self.gate_logit), torch.sigmoid(self.blend_logit)
        m_eff = m0 + gate * (self.mag - m0)
        z = torch.einsum("...i,oi->...o", x, V)
        y = (1 - beta) * (m_eff / n) * z + beta * z
        if self.base_layer.bias is not None:
            y = y + self.base_layer.bias
        return y
