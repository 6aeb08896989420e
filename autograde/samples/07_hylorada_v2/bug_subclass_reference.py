# sample: borrows lorakit's reference layer instead of implementing it
# expect: zero
# fails: not reference
# %% [hylorada_v2_linear]
import lorakit


class HyLoRADAv2Linear(lorakit.HyLoRADAv2Linear):
    pass
