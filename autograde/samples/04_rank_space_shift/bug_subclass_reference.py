# sample: borrows lorakit's reference layer instead of implementing it: every test cell has a hidden check, so no credit
# expect: zero
# fails: not reference
# %% [rss_lora]
from lorakit.layers import RSSBilinearLoRA as _Reference


class RSSBilinearLoRA(_Reference):
    def __init__(self, base_layer, cond_dim, rank=4, alpha=1):
        super().__init__(base_layer, cond_dim, rank=rank, alpha=alpha)
# %% [merge_conditioned]
def merge_conditioned(layer, p):
    return layer.to_linear(p)
