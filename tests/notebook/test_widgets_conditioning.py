"""lorakit.notebook.gating_explorer: the rank-gating explorer's logic, driven without a browser."""
import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import lorakit  # noqa: E402
from lorakit.checks import _probe  # noqa: E402
from lorakit.notebook.gating_explorer import gating_state, plot_gating, rank_gating_explorer  # noqa: E402


def layer(cls, **kw):
    torch.manual_seed(0)
    out = cls(nn.Linear(7, 5), cond_dim=2, rank=3, **kw)
    _probe.randomize_adapters(out, seed=1)
    return out


class StudentRSS(nn.Module):
    """A contract-style layer with no gate()/shift() methods: found by shape."""

    def __init__(self, base_layer, cond_dim, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer.requires_grad_(False)
        self.scaling = alpha / rank
        self.A = nn.Parameter(torch.randn(rank, base_layer.in_features))
        self.B = nn.Parameter(torch.zeros(base_layer.out_features, rank))
        self.S = nn.Parameter(torch.randn(rank, cond_dim))    # declared before C on purpose
        self.C = nn.Parameter(torch.randn(rank, cond_dim))

    def forward(self, x, p):
        z = (x @ self.A.T) * (p @ self.C.T) + p @ self.S.T
        return self.base_layer(x) + self.scaling * z @ self.B.T


def test_state_of_a_reference_rss_layer():
    lay = layer(lorakit.RSSBilinearLoRA)
    p = torch.tensor([0.5, -1.0])
    x = torch.randn(7)
    s = gating_state(lay, p, x)
    assert torch.allclose(s["gate"], lay.lora_C.detach() @ p)
    assert torch.allclose(s["shift"], lay.lora_S.detach() @ p)
    assert torch.allclose(s["output"], lay(x[None], p[None])[0].detach())
    assert torch.allclose(s["update"], s["output"] - s["base"])


def test_state_of_a_bilinear_layer_has_no_shift_and_vanishes_at_zero():
    lay = layer(lorakit.BilinearLoRALinear)
    s = gating_state(lay, [0.0, 0.0])
    assert s["shift"] is None and s["update_norm"] == 0.0 and s["gate"].abs().max() == 0


def test_student_layers_are_read_by_shape():
    torch.manual_seed(0)
    lay = StudentRSS(nn.Linear(7, 5), cond_dim=2, rank=3)
    _probe.randomize_adapters(lay, seed=1)
    p = torch.tensor([1.0, 0.25])
    s = gating_state(lay, p, cond_dim=2)
    assert torch.allclose(s["gate"], lay.C.detach() @ p)
    assert torch.allclose(s["shift"], lay.S.detach() @ p)
    with pytest.raises(ValueError, match="cond_dim"):
        gating_state(lay, p)                       # no cond_dim attribute and none given


@pytest.mark.parametrize("bad", [[1.0], [1.0, 2.0, 3.0], [[1.0, 2.0]], [float("nan"), 0.0]])
def test_bad_p_fails_loudly(bad):
    with pytest.raises(ValueError, match="p must|NaN"):
        gating_state(layer(lorakit.RSSBilinearLoRA), bad)


def test_explorer_follows_the_sliders():
    lay = layer(lorakit.RSSBilinearLoRA)
    ex = rank_gating_explorer(lay, labels=["temperature", "load"])
    assert [s.description for s in ex.sliders] == ["temperature", "load"]
    first = ex.result
    assert torch.allclose(first["p"], torch.tensor([0.75, 0.0]))
    ex.sliders[1].value = -1.0
    assert torch.allclose(ex.result["p"], torch.tensor([0.75, -1.0]))
    assert torch.allclose(ex.result["shift"], lay.lora_S.detach() @ torch.tensor([0.75, -1.0]))
    with pytest.raises(ValueError, match="labels"):
        rank_gating_explorer(lay, labels=["only one"])
    with pytest.raises(ValueError, match="p_range"):
        rank_gating_explorer(lay, p_range=(0.5, 1.0))


def test_plot_draws_both_panels():
    fig = plot_gating(gating_state(layer(lorakit.RSSBilinearLoRA), [0.3, 0.3]), limits=(2.0, 3.0))
    assert len(fig.axes) == 2
    assert fig.axes[0].get_ylim() == (-2.0, 2.0) and fig.axes[1].get_ylim() == (-3.0, 3.0)


def test_slider_labels_fit_and_tracks_are_wide():
    labels = ["p1 (temperature)", "p2 (load)"]
    ex = rank_gating_explorer(layer(lorakit.RSSBilinearLoRA), labels=labels)
    for s in ex.sliders:
        label_px = int(s.style.description_width.removesuffix("px"))
        assert label_px >= 7 * max(map(len, labels))   # ~7 px per character: nothing cut off
        width = int(s.layout.width.removesuffix("px"))
        assert width - label_px >= 400                  # the track and readout, not ~120 px
        assert s.tooltip == s.description
    assert len({s.style.description_width for s in ex.sliders}) == 1   # one label column


def test_both_panels_name_their_quantity_and_unit():
    rss = plot_gating(gating_state(layer(lorakit.RSSBilinearLoRA), [0.3, 0.3]))
    ylabel = rss.axes[0].get_ylabel()
    assert "g(p)" in ylabel and "b(p)" in ylabel and "unit" in ylabel
    assert rss.axes[0].get_xlabel() == "rank component"
    assert "unit" in rss.axes[1].get_ylabel()
    bil = plot_gating(gating_state(layer(lorakit.BilinearLoRALinear), [0.3, 0.3]))
    assert "g(p)" in bil.axes[0].get_ylabel() and "b(p)" not in bil.axes[0].get_ylabel()
    assert "unit" in bil.axes[0].get_ylabel()
