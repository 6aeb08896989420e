# sample: correct; self-contained, transposed factors, einsum, w of shape (structure_dim, 1), assert on the prior
# expect: full
# %% [hylorada_v2_linear]
import math


class HyLoRADAv2Linear(nn.Module):
    def __init__(self, base_layer, rank=8, alpha=16, structure_dim=32):
        super().__init__()
        self.base_layer = base_layer
        for p in base_layer.parameters():
            p.requires_grad = False
        self.scaling = alpha / rank
        d_out, d_in = base_layer.weight.shape
        self.down = nn.Parameter(torch.empty(d_in, rank))          # A^T
        nn.init.orthogonal_(self.down)
        self.up = nn.Parameter(torch.zeros(rank, d_out))           # B^T
        norms = base_layer.weight.detach().norm(dim=1)
        self.m = nn.Parameter(norms.clone())
        self.register_buffer("m0", norms.clone())
        self.g = nn.Parameter(torch.zeros(()))
        self.r = nn.Parameter(torch.full((), 0.1))
        self.w = nn.Parameter(torch.zeros(structure_dim, 1))
        self.k = structure_dim

    def forward(self, x, structure_prior=None):
        W = self.base_layer.weight
        V = W + self.scaling * torch.einsum("ir,ro->oi", self.down, self.up)
        n = V.norm(dim=1).detach()
        m_eff = self.m0 + torch.sigmoid(self.g) * (self.m - self.m0)
        c = 1 + (1 - torch.sigmoid(self.r)) * (m_eff / n - 1)
        delta = self.scaling * torch.einsum("...i,ir,ro->...o", x, self.down, self.up)
        if structure_prior is not None:
            assert structure_prior.shape == x.shape[:-1] + (self.k,), "prior must be (B, T, structure_dim)"
            delta = delta * (0.5 + torch.sigmoid(structure_prior @ self.w))
        y = c * (torch.einsum("...i,oi->...o", x, W) + delta)
        if self.base_layer.bias is not None:
            y = y + self.base_layer.bias
        return y
