# sample: borrows lorakit's reference layer instead of implementing it
# expect: zero
# fails: not reference
# %% [dora_linear]
import lorakit


class DoRALinear(lorakit.DoRALinear):
    pass
