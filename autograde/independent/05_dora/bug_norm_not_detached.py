# sample: computes the row norm of V with autograd on (no detach / no_grad), so outputs are identical to DoRA's but the gradients of A and B get the extra projection term the paper drops, and V is kept for backward; caught by the visible test_norm_detached only
# expect: partial
# bug: row norm not detached in backward
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
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.base_layer.requires_grad_(False)
        self.magnitude = nn.Parameter(base_layer.weight.detach().norm(dim=1))

    def forward(self, x):
        # x: (..., in_features) -> (..., out_features)
        V = self.base_layer.weight + self.scaling * self.lora_B @ self.lora_A
        W_new = V * (self.magnitude / V.norm(dim=1))[:, None]
        out = x @ W_new.T
        if self.base_layer.bias is not None:
            out = out + self.base_layer.bias
        return out
