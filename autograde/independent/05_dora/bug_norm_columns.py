# sample: initialises m with the row norms as asked, but normalises V by its column norms (V.norm(dim=0, keepdim=True), the paper's "column" copied literally), so even at init the layer is not its base and every output row is rescaled wrongly; caught by the visible test_identity, test_forward and test_norm_detached
# expect: partial
# bug: wrong axis of the norm (dim=0 instead of per output row)
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
        direction = V / V.norm(dim=0, keepdim=True).detach()          # unit columns, as in the paper
        W_new = self.magnitude[:, None] * direction
        return F.linear(x, W_new, self.base_layer.bias)
