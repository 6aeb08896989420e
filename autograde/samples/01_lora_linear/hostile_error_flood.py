# sample: hostile; shows forty 1 MB tracebacks in one cell: errors are kept (they decide scores) but shortened to a few KB each (past the output cap, one per cell), so the notebook stays small
# expect: zero
# %% [lora_linear]
ip = get_ipython()
for _ in range(40):
    try:
        raise ValueError("E" * 1_000_000)
    except ValueError:
        ip.showtraceback()
