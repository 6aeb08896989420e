# sample: hostile; the starter stubs left in place and every locked test cell edited to `pass`: nbgrader restores the tests from the gradebook, so it earns nothing (full marks if the edits stood)
# expect: zero
# %% [edit:test_shapes]
pass
# %% [edit:test_frozen]
pass
# %% [edit:test_identity]
pass
# %% [edit:test_update]
pass
# %% [edit:test_scaling]
pass
# %% [edit:test_order]
pass
# %% [edit:test_gradients]
pass
# %% [edit:test_merge]
pass
