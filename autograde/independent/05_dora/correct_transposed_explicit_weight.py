# sample: A stored as (in, rank) and B as (rank, out) (transposed), V built transposed as Vᵀ = Wᵀ + s·A_t B_t whose column norms (dim=0) are the row norms of V, detached with .detach(); the rescaled weight is applied with x @ (Vᵀ · m/n) and the bias added afterwards
# expect: full
# %% [dora_linear]
import math


class DoRALinear(nn.Module):
    def __init__(self, base_layer, rank=8, alpha=16):
        super().__init__()
        self.base_layer = base_layer
        self.rank = rank
        self.alpha = alpha
        self.scaling = alpha / rank
        in_features = base_layer.in_features
        out_features = base_layer.out_features
        for p in self.base_layer.parameters():
            p.requires_grad = False
        A = torch.empty(rank, in_features)
        nn.init.kaiming_uniform_(A, a=math.sqrt(5))
        self.A_t = nn.Parameter(A.T.contiguous())                    # (in, rank)
        self.B_t = nn.Parameter(torch.zeros(rank, out_features))     # (rank, out)
        self.m = nn.Parameter(base_layer.weight.detach().pow(2).sum(dim=1).sqrt())

    def forward(self, x):
        V_t = self.base_layer.weight.T + self.scaling * (self.A_t @ self.B_t)   # (in, out) = Vᵀ
        n = V_t.norm(dim=0).detach()                                            # ‖row i of V‖, (out,)
        y = x @ (V_t * (self.m / n))
        b = self.base_layer.bias
        return y if b is None else y + b
