"""lorakit.notebook.analysis: the LoRA cost model against hand-derived numbers, torch's FLOP counter,
and its own derivation (which order is cheaper, and from how many tokens on)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from lorakit.notebook.analysis import (
    FULL,
    LORA_B_AX,
    LORA_BA_X,
    STRATEGIES,
    b_ax_adapter_flops,
    ba_x_adapter_flops,
    base_flops,
    bax_cheaper,
    crossover_tokens,
    lora_costs,
    time_orders,
)

# d_in = d_out = 4096, r = 16, T = 512, float32, worked by hand:
#   base       2·512·4096·4096               = 17,179,869,184
#   form BA    2·4096·16·4096                =    536,870,912
#   B(Ax)      2·512·16·(4096 + 4096)        =    134,217,728
#   mem (BA)x  (4096·4096 + 512·4096)·4 B    =     75,497,472
#   mem B(Ax)  (512·16 + 512·4096)·4 B       =      8,421,376
SQUARE = {
    FULL: {"params": 16_777_216, "flops": 17_179_869_184, "adapter_flops": 0, "extra_memory_bytes": 0},
    LORA_BA_X: {
        "params": 131_072,
        "flops": 34_896_609_280,
        "adapter_flops": 17_716_740_096,
        "extra_memory_bytes": 75_497_472,
    },
    LORA_B_AX: {
        "params": 131_072,
        "flops": 17_314_086_912,
        "adapter_flops": 134_217_728,
        "extra_memory_bytes": 8_421_376,
    },
}


def test_square_layer_matches_hand_derived_numbers() -> None:
    assert lora_costs(4096, 4096, 16, 512) == SQUARE
    assert tuple(lora_costs(4096, 4096, 16, 512)) == STRATEGIES


def test_rectangular_layer_keeps_d_in_and_d_out_apart() -> None:
    # d_in = 768, d_out = 3072, r = 8, T = 10, 2 bytes per element (fp16)
    costs = lora_costs(768, 3072, 8, 10, bytes_per_el=2)
    assert costs[FULL] == {"params": 2_359_296, "flops": 47_185_920, "adapter_flops": 0, "extra_memory_bytes": 0}
    assert costs[LORA_BA_X] == {
        "params": 30_720,
        "flops": 47_185_920 + 37_748_736 + 47_185_920,
        "adapter_flops": 37_748_736 + 47_185_920,
        "extra_memory_bytes": (2_359_296 + 30_720) * 2,  # BA (3072, 768) + output (10, 3072)
    }
    assert costs[LORA_B_AX] == {
        "params": 30_720,
        "flops": 47_185_920 + 614_400,
        "adapter_flops": 614_400,
        "extra_memory_bytes": (80 + 30_720) * 2,  # Ax (10, 8) + output (10, 3072)
    }


@pytest.mark.parametrize(("d_in", "d_out", "rank", "tokens"), [(8, 5, 3, 7), (32, 48, 4, 16), (1, 1, 1, 1)])
def test_flops_agree_with_torch_flop_counter(d_in: int, d_out: int, rank: int, tokens: int) -> None:
    x = torch.randn(tokens, d_in)  # (T, d_in)
    w = torch.randn(d_out, d_in)  # (d_out, d_in), nn.Linear storage
    a = torch.randn(rank, d_in)  # (r, d_in)
    b = torch.randn(d_out, rank)  # (d_out, r)
    costs = lora_costs(d_in, d_out, rank, tokens)

    def counted(fn) -> int:
        with FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops()

    assert counted(lambda: torch.nn.functional.linear(x, w)) == base_flops(d_in, d_out, tokens)
    assert counted(lambda: (x @ a.T) @ b.T) == b_ax_adapter_flops(d_in, d_out, rank, tokens)
    assert counted(lambda: x @ (b @ a).T) == ba_x_adapter_flops(d_in, d_out, rank, tokens)
    assert counted(lambda: torch.nn.functional.linear(x, w) + (x @ a.T) @ b.T) == costs[LORA_B_AX]["flops"]
    assert counted(lambda: torch.nn.functional.linear(x, w) + x @ (b @ a).T) == costs[LORA_BA_X]["flops"]
    assert counted(lambda: torch.nn.functional.linear(x, w)) == costs[FULL]["flops"]


@pytest.mark.parametrize(
    "args",
    [
        (0, 8, 1, 1),
        (-4, 8, 1, 1),
        (8, 0, 1, 1),
        (8, 8, 0, 1),
        (8, 8, 1, 0),
        (8, 4, 5, 1),  # rank > min(d_in, d_out)
    ],
)
def test_bad_arguments_raise_value_error(args: tuple) -> None:
    with pytest.raises(ValueError, match="must be"):
        lora_costs(*args)
    with pytest.raises(ValueError, match="must be"):
        bax_cheaper(*args)


@pytest.mark.parametrize("args", [(8.0, 8, 1, 1), (8, "8", 1, 1), (True, 8, 1, 1)])
def test_arguments_of_the_wrong_type_raise_type_error(args: tuple) -> None:
    with pytest.raises(TypeError, match="must be an int"):
        lora_costs(*args)


def test_error_messages_name_what_was_expected() -> None:
    with pytest.raises(ValueError, match=r"rank must be <= min\(d_in, d_out\) = 4, got rank=5"):
        lora_costs(8, 4, 5, 1)
    with pytest.raises(ValueError, match="tokens must be a positive int, got 0"):
        lora_costs(8, 8, 1, 0)
    with pytest.raises(ValueError, match="bytes_per_el must be a positive int"):
        lora_costs(8, 8, 1, 1, bytes_per_el=0)
    with pytest.raises(ValueError, match="rank must be <= min"):
        crossover_tokens(8, 4, 5)
    with pytest.raises(ValueError, match="repeats must be a positive int"):
        time_orders(8, 8, 1, 1, repeats=0)


def test_rank_below_min_is_not_enough_for_b_ax_to_win() -> None:
    # d_in = d_out = 4, r = 3 < 4: r·(n+m) = 24 > n·m = 16, so T* = ⌈48 / 8⌉ = 6.
    assert crossover_tokens(4, 4, 3) == 6
    assert bax_cheaper(4, 4, 3, 5)
    assert not bax_cheaper(4, 4, 3, 6)  # a tie: 2·6·3·8 = 288 = 2·4·3·4 + 2·6·16
    costs = lora_costs(4, 4, 3, 6)
    assert costs[LORA_B_AX]["flops"] == costs[LORA_BA_X]["flops"]


def test_lora_sized_ranks_win_for_every_token_count() -> None:
    assert crossover_tokens(4096, 4096, 16) is None
    assert crossover_tokens(4096, 4096, 2048) is None  # r = n·m/(n+m) exactly: still never a tie
    assert crossover_tokens(4096, 4096, 2049) is not None


def rank_params(d_in: int, d_out: int, rank: int, tokens: int) -> int:
    """A: (r, d_in) plus B: (d_out, r)."""
    return rank * d_in + d_out * rank


dims = st.integers(min_value=1, max_value=512)


@st.composite
def layer_sizes(draw) -> tuple[int, int, int, int]:
    d_in, d_out = draw(dims), draw(dims)
    rank = draw(st.integers(min_value=1, max_value=min(d_in, d_out)))
    tokens = draw(st.integers(min_value=1, max_value=8192))
    return d_in, d_out, rank, tokens


@settings(max_examples=300, deadline=None)
@given(layer_sizes())
def test_bax_cheaper_agrees_with_the_flop_formulas(sizes: tuple[int, int, int, int]) -> None:
    costs = lora_costs(*sizes)
    assert bax_cheaper(*sizes) == (costs[LORA_B_AX]["flops"] < costs[LORA_BA_X]["flops"])
    assert costs[LORA_B_AX]["params"] == costs[LORA_BA_X]["params"] == rank_params(*sizes)


@settings(max_examples=300, deadline=None)
@given(layer_sizes())
def test_b_ax_cheaper_for_all_tokens_when_rank_is_small(sizes: tuple[int, int, int, int]) -> None:
    # The true claim: r·(d_in + d_out) <= d_in·d_out  ⇒  B(Ax) < (BA)x in FLOPs for every T >= 1.
    d_in, d_out, rank, tokens = sizes
    costs = lora_costs(*sizes)
    if rank * (d_in + d_out) <= d_in * d_out:
        assert costs[LORA_B_AX]["flops"] < costs[LORA_BA_X]["flops"]
        assert crossover_tokens(d_in, d_out, rank) is None


@settings(max_examples=300, deadline=None)
@given(layer_sizes())
def test_crossover_is_the_first_token_count_where_b_ax_stops_winning(sizes: tuple[int, int, int, int]) -> None:
    d_in, d_out, rank, _ = sizes
    t_star = crossover_tokens(d_in, d_out, rank)
    if t_star is None:
        return
    assert not bax_cheaper(d_in, d_out, rank, t_star)
    assert not bax_cheaper(d_in, d_out, rank, t_star + 1000)
    if t_star > 1:
        assert bax_cheaper(d_in, d_out, rank, t_star - 1)
        assert bax_cheaper(d_in, d_out, rank, 1)


def test_time_orders_returns_positive_medians() -> None:
    m = time_orders(64, 48, 4, 32, repeats=3)
    assert set(m) == {"ba_x_ms", "b_ax_ms", "ratio", "repeats"}
    assert m["ba_x_ms"] > 0 and m["b_ax_ms"] > 0 and m["ratio"] > 0
    assert 1 <= m["repeats"] <= 3



# --- effective rank ---------------------------------------------------------------------------

def test_effective_rank_known_values():
    import torch

    from lorakit.notebook.analysis import effective_rank

    assert effective_rank(torch.eye(5)) == pytest.approx(5)
    assert effective_rank(torch.ones(4, 6)) == pytest.approx(1)
    assert effective_rank(torch.zeros(3, 3)) == 0.0
    assert effective_rank(torch.diag(torch.tensor([1.0, 1.0, 0.0]))) == pytest.approx(2)
    s = torch.tensor([3.0, 1.0])
    p = s / s.sum()
    assert effective_rank(torch.diag(s)) == pytest.approx(float(torch.exp(-(p * p.log()).sum())))
    assert effective_rank(2.5 * torch.eye(4)) == pytest.approx(4)     # scale-free


def test_effective_rank_rejects_non_matrices():
    import torch

    from lorakit.notebook.analysis import effective_rank

    with pytest.raises(ValueError, match="2-D"):
        effective_rank(torch.ones(3))
