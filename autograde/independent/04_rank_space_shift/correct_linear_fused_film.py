# sample: bias-free nn.Linear modules for A (in -> r) and B (r -> out, zeroed) and ONE fused nn.Linear(cond_dim, 2 * rank, bias=False) whose two halves are the gate C and the shift S (default Kaiming-uniform init); x is flattened to (B, N, in) so that (B, 1, r) gate and shift broadcast over every middle dim, then reshaped back; merge builds a new nn.Linear from detached tensors assigned as fresh nn.Parameters
# expect: full
# %% [rss_lora]
import math


class RSSBilinearLoRA(nn.Module):
    def __init__(self, base_layer, cond_dim, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer          # the frozen nn.Linear; weight (out_features, in_features)
        self.scaling = alpha / rank
        for q in self.base_layer.parameters():
            q.requires_grad = False
        dev, dt = base_layer.weight.device, base_layer.weight.dtype
        self.rank = rank
        self.down = nn.Linear(base_layer.in_features, rank, bias=False, device=dev, dtype=dt)
        self.up = nn.Linear(rank, base_layer.out_features, bias=False, device=dev, dtype=dt)
        self.film = nn.Linear(cond_dim, 2 * rank, bias=False, device=dev, dtype=dt)   # [C; S]
        nn.init.zeros_(self.up.weight)

    def film_params(self, p):
        gate, shift = self.film(p).chunk(2, dim=-1)            # (B, r) each
        return gate, shift

    def forward(self, x, p):
        # x: (B, ..., in_features), p: (B, cond_dim) -> (B, ..., out_features)
        lead = x.shape[:-1]
        xf = x.reshape(x.shape[0], -1, x.shape[-1])             # (B, N, in)
        gate, shift = self.film_params(p)
        z = self.down(xf) * gate[:, None, :] + shift[:, None, :]
        out = self.base_layer(xf) + self.scaling * self.up(z)
        return out.reshape(*lead, out.shape[-1])
# %% [merge_conditioned]
def merge_conditioned(layer, p):
    # p: (cond_dim,). Return an nn.Linear (with a bias) that computes layer(x, p) for this p.
    base = layer.base_layer
    W = base.weight.detach()
    A = layer.down.weight.detach()                              # (r, in)
    B = layer.up.weight.detach()                                # (out, r)
    gate, shift = layer.film_params(p.detach().to(W)[None])
    gate, shift = gate[0].detach(), shift[0].detach()
    new_w = W + layer.scaling * B @ torch.diag(gate) @ A
    new_b = layer.scaling * B @ shift
    if base.bias is not None:
        new_b = new_b + base.bias.detach()
    merged = nn.Linear(base.in_features, base.out_features)
    merged.weight = nn.Parameter(new_w.clone(), requires_grad=False)
    merged.bias = nn.Parameter(new_b.clone(), requires_grad=False)
    return merged
