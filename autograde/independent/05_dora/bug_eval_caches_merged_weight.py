# sample: in eval() mode forward computes the rescaled weight m ⊙ V/‖V‖_row once and reuses it for every later eval call (an inference "optimisation"); the cache is cleared only by .train()
# expect: partial
# bug: state cached across calls: in eval mode the merged weight is computed once and reused, so after A, B or m change (a loaded checkpoint, an optimiser step taken in eval mode) the layer keeps returning the old function; it must recompute at every call
# %% [dora_linear]
class DoRALinear(nn.Module):
    def __init__(self, base_layer, rank=8, alpha=16):
        super().__init__()
        self.base_layer = base_layer
        self.rank = rank
        self.alpha = alpha
        self.scaling = alpha / rank
        in_features = base_layer.in_features
        out_features = base_layer.out_features
        self.base_layer.requires_grad_(False)
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.magnitude = nn.Parameter(base_layer.weight.detach().norm(dim=1).clone())
        self._eval_weight = None

    def train(self, mode=True):
        self._eval_weight = None
        return super().train(mode)

    def merged_weight(self):
        V = self.base_layer.weight + self.scaling * self.lora_B @ self.lora_A
        return (self.magnitude / V.norm(dim=1).detach())[:, None] * V

    def forward(self, x):
        if self.training:
            W_new = self.merged_weight()
        else:
            if self._eval_weight is None:
                with torch.no_grad():
                    self._eval_weight = self.merged_weight()
            W_new = self._eval_weight
        return F.linear(x, W_new, self.base_layer.bias)
