"""What the notebooks show besides the exercises:

    analysis.py         cost model (FLOPs, parameter counts, time orders) and effective rank
    cost_explorer.py    the (BA)x vs B(Ax) explorer widget (notebook 01)
    gating_explorer.py  the rank-gating explorer of conditioned layers (notebooks 03, 04)
"""
