# sample: nn.Parameter A, B, C with Kaiming-uniform A and C and zero B, the gate reshaped with view over x's middle dims as in seed 000, merge builds a new nn.Linear with W + s B diag(Cp) A under torch.no_grad
# expect: full
# %% [bilinear_lora]
import math


class BilinearLoRALinear(nn.Module):
    def __init__(self, base_layer, cond_dim, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer          # the frozen nn.Linear; weight (out_features, in_features)
        self.scaling = alpha / rank
        self.rank = rank
        self.cond_dim = cond_dim
        in_f, out_f = base_layer.in_features, base_layer.out_features
        ref = base_layer.weight
        kw = dict(dtype=ref.dtype, device=ref.device)
        self.lora_A = nn.Parameter(torch.empty(rank, in_f, **kw))
        self.lora_B = nn.Parameter(torch.zeros(out_f, rank, **kw))
        self.lora_C = nn.Parameter(torch.empty(rank, cond_dim, **kw))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.lora_C, a=math.sqrt(5))
        for q in self.base_layer.parameters():
            q.requires_grad_(False)

    def forward(self, x, p):
        # x: (B, ..., in_features), p: (B, cond_dim) -> (B, ..., out_features)
        h = x @ self.lora_A.T                              # (B, ..., r)
        c = p @ self.lora_C.T                              # (B, r)
        c = c.view(c.shape[0], *([1] * (h.ndim - 2)), c.shape[-1])
        return self.base_layer(x) + self.scaling * ((h * c) @ self.lora_B.T)
# %% [merge_conditioned]
def merge_conditioned(layer, p):
    # p: (cond_dim,). Return an nn.Linear that computes layer(x, p) for this p.
    base = layer.base_layer
    with torch.no_grad():
        g = layer.lora_C @ p.to(layer.lora_C)                          # (r,)
        delta = layer.scaling * layer.lora_B @ torch.diag(g) @ layer.lora_A
        merged = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                           device=base.weight.device, dtype=base.weight.dtype)
        merged.weight.copy_(base.weight + delta)
        if base.bias is not None:
            merged.bias.copy_(base.bias)
    return merged
