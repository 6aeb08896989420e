# sample: adapters stored transposed ((in, r), (cond_dim, r), (r, out)) with a small-normal init for A and C, the gate unsqueezed in a loop until it matches h's rank, merge builds a new layer from detached tensors with the gate folded into B's columns
# expect: full
# %% [bilinear_lora]
import math


class BilinearLoRALinear(nn.Module):
    def __init__(self, base_layer, cond_dim, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer          # the frozen nn.Linear; weight (out_features, in_features)
        self.scaling = alpha / rank
        for q in base_layer.parameters():
            q.requires_grad = False
        ref = base_layer.weight
        n_in, n_out = base_layer.in_features, base_layer.out_features
        self.A_t = nn.Parameter(torch.randn(n_in, rank, dtype=ref.dtype, device=ref.device) / math.sqrt(n_in))
        self.C_t = nn.Parameter(torch.randn(cond_dim, rank, dtype=ref.dtype, device=ref.device) / math.sqrt(cond_dim))
        self.B_t = nn.Parameter(torch.zeros(rank, n_out, dtype=ref.dtype, device=ref.device))

    def forward(self, x, p):
        # x: (B, ..., in_features), p: (B, cond_dim) -> (B, ..., out_features)
        h = torch.matmul(x, self.A_t)          # (B, ..., r)
        gate = torch.matmul(p, self.C_t)       # (B, r)
        while gate.dim() < h.dim():
            gate = gate.unsqueeze(1)           # (B, 1, ..., 1, r)
        return self.base_layer(x) + self.scaling * torch.matmul(h * gate, self.B_t)
# %% [merge_conditioned]
def merge_conditioned(layer, p):
    # p: (cond_dim,). Return an nn.Linear that computes layer(x, p) for this p.
    base = layer.base_layer
    A, B, C = layer.A_t.detach(), layer.B_t.detach(), layer.C_t.detach()
    g = p.detach().to(C) @ C                                  # (r,)
    delta = layer.scaling * (A * g) @ B                       # (in, out): A diag(g) B
    new = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None)
    new = new.to(device=base.weight.device, dtype=base.weight.dtype)
    new.weight = nn.Parameter(base.weight.detach() + delta.T, requires_grad=False)
    if base.bias is not None:
        new.bias = nn.Parameter(base.bias.detach().clone(), requires_grad=False)
    return new
