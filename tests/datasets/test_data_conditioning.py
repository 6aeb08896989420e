"""lorakit.datasets.plant: the simulated plant with operating conditions (notebooks 03 and 04)."""
import pytest
import torch

from lorakit.datasets.plant import OperatingSystem, condition_splits


def test_deterministic_given_the_seed():
    a, b = OperatingSystem(seed=3), OperatingSystem(seed=3)
    for name in ("W0", "b0", "U", "V", "G", "D"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(a.W0, OperatingSystem(seed=4).W0)
    conds = condition_splits(seed=1)["train"]
    s1 = a.sample(conds, 5, torch.Generator().manual_seed(0))
    s2 = b.sample(conds, 5, torch.Generator().manual_seed(0))
    assert all(torch.equal(u, v) for u, v in zip(s1, s2, strict=True))


def test_response_is_the_documented_equation():
    s = OperatingSystem(noise=0.0)
    p = torch.tensor([0.3, -0.7])
    x = torch.randn(4, s.in_dim)
    want = x @ s.weight(p).T + s.bias(p)
    assert torch.allclose(s.respond(x, p.expand(4, -1)), want, atol=1e-5)
    dW, db = s.true_update(p)
    assert torch.linalg.matrix_rank(dW).item() == s.modes
    assert torch.allclose(db, s.D @ p, atol=1e-6)


def test_pretrained_model_is_the_plant_at_the_nominal_condition():
    for nominal in (None, (0.6, -0.6)):
        s = OperatingSystem(noise=0.0, nominal=nominal)
        base = s.pretrained()
        assert not any(q.requires_grad for q in base.parameters())
        p_nom = s.p_nom.expand(3, -1)
        x = torch.randn(3, s.in_dim)
        assert torch.allclose(base(x), s.respond(x, p_nom), atol=1e-5)
    # with p_nom = 0 the true update vanishes at p = 0; with p_nom != 0 it does not
    assert OperatingSystem().true_update(torch.zeros(2))[0].abs().max() == 0
    assert OperatingSystem(nominal=(0.6, -0.6)).true_update(torch.zeros(2))[0].abs().max() > 0.1


def test_sample_shapes_and_grouping():
    s = OperatingSystem()
    conds = torch.tensor([[0.0, 0.0], [1.0, -1.0], [0.5, 0.5]])
    x, p, y = s.sample(conds, 4, torch.Generator().manual_seed(0))
    assert x.shape == (12, s.in_dim) and p.shape == (12, 2) and y.shape == (12, s.out_dim)
    assert torch.equal(p[4:8], conds[1].expand(4, -1))


def test_splits():
    sp = condition_splits(cond_dim=3, n_train=8, n_heldout=5, seed=2)
    assert sp["train"].shape == (8, 3) and sp["interpolate"].shape == (5, 3)
    assert sp["train"].abs().max() <= 1 and sp["interpolate"].abs().max() <= 1
    beyond = sp["extrapolate"].abs().amax(dim=1)
    assert (beyond > 1).all() and (beyond <= 1.5 + 1e-6).all()
    again = condition_splits(cond_dim=3, n_train=8, n_heldout=5, seed=2)
    assert all(torch.equal(sp[k], again[k]) for k in sp)


@pytest.mark.parametrize("bad", [torch.zeros(3), torch.zeros(2, 3), torch.zeros(2, 2, 2),
                                 torch.zeros(2, dtype=torch.long), torch.tensor([float("nan"), 0.0]),
                                 [0.0, 0.0]])
def test_bad_conditions_fail_loudly(bad):
    s = OperatingSystem()
    with pytest.raises((ValueError, TypeError), match="p must|floating|NaN"):
        s.gains(bad)


def test_bad_arguments_fail_loudly():
    with pytest.raises(ValueError, match="modes"):
        OperatingSystem(modes=20)
    with pytest.raises(ValueError, match="nominal"):
        OperatingSystem(nominal=(0.0,))
    with pytest.raises(ValueError, match="noise"):
        OperatingSystem(noise=-1.0)
    s = OperatingSystem()
    with pytest.raises(ValueError, match="one condition per row"):
        s.respond(torch.zeros(4, s.in_dim), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="per_condition"):
        s.sample(torch.zeros(2, 2), 0, torch.Generator())
    with pytest.raises(ValueError, match="train_radius"):
        condition_splits(train_radius=2.0, extrapolate_to=1.5)
