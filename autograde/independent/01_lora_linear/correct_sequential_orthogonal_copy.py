# sample: A and B are bias-free nn.Linear modules inside an nn.Sequential, A initialised with orthogonal rows, a delta_weight() helper used by merge; merge_lora deep-copies the base layer and writes the merged weight into the copy under torch.no_grad (the given layer is untouched)
# expect: full
# %% [lora_linear]
import copy


class LoRALinear(nn.Module):
    def __init__(self, base_layer, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer
        self.rank = rank
        self.alpha = alpha
        self.scaling = alpha / rank
        in_features = base_layer.in_features
        out_features = base_layer.out_features
        for p in self.base_layer.parameters():
            p.requires_grad = False
        down = nn.Linear(in_features, rank, bias=False)
        up = nn.Linear(rank, out_features, bias=False)
        nn.init.orthogonal_(down.weight)
        nn.init.zeros_(up.weight)
        self.adapter = nn.Sequential(down, up).to(base_layer.weight.device, base_layer.weight.dtype)

    def delta_weight(self):
        # the (out, in) update s * B A, only for merging (forward never builds it)
        down, up = self.adapter
        return self.scaling * (up.weight @ down.weight)

    def forward(self, x):
        return self.base_layer(x) + self.scaling * self.adapter(x)
# %% [merge_lora]
def merge_lora(layer):
    merged = copy.deepcopy(layer.base_layer)
    with torch.no_grad():
        merged.weight.add_(layer.delta_weight())
    merged.requires_grad_(False)
    return merged
