"""Stacked attack fits against lone fits: same seeds, same networks, weight by weight."""

import numpy as np
import pytest
import torch
from torch import nn

from mia_ray.attacks import FitJob, Knowledge, fit_attack_sets, make_attack
from mia_ray.attacks.learned import fit_learned
from mia_ray.attacks.networks import Dropout, SAMIANet, init_attack_weights
from mia_ray.features import Features
from mia_ray.specs import AttackSpec

C = 5
# Stacked kernels (bmm, batched softmax) round differently from one network's; a few
# epochs of SGD keep that within this bound (measured: about 1e-7).
ATOL = 1e-5
LEARNED = ("nn", "nn_top3", "nn_cls", "nn_sens_cls", "samia")


def shadow(n: int, seed: int) -> Features:
    """Features with a membership signal: members more confident."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, C, n)
    member = rng.random(n) < 0.5
    logits = rng.normal(size=(n, C))
    logits[np.arange(n), label] += np.where(member, 3.0, 1.0)
    prob = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    sens = rng.gamma(2.0, np.where(member, 0.5, 0.8)[:, None], size=(n, C))
    return Features(prob.astype(np.float32), sens.astype(np.float32), label, member)


@pytest.mark.parametrize("sizes", [(97,), (97, 130, 65)])
def test_stacked_fits_end_where_lone_fits_do(sizes):
    """One fit's attacks (MLPs padded to one width) and several fits' (unequal sizes:
    different batch counts, a lone trailing sample at 65 = 2 x 32 + 1) stacked."""
    spec = AttackSpec(names=("conf", *LEARNED), epochs=4, batch_size=32, lr=0.05)
    sets = [(Knowledge(shadow=shadow(n, seed=i)), spec, C) for i, n in enumerate(sizes)]
    seeds = [7 + 100 * i for i in range(len(sizes))]  # each fit its own seed, as in a sweep
    lone = fit_attack_sets(sets, seeds=seeds, stack=False)
    stacked = fit_attack_sets(sets, seeds=seeds, stack=True)
    # SAMIA stacks through vmap on CUDA by default; stack it here on the CPU too.
    for fitted in stacked:
        fitted["samia"] = make_attack("samia", num_classes=C)
    fit_learned([FitJob(fitted["samia"], knowledge, spec, seed)
                 for fitted, (knowledge, _, _), seed in zip(stacked, sets, seeds)],
                stack_vmap=True)
    for a, b in zip(lone, stacked):
        assert list(a) == list(b) == ["conf", *LEARNED]
        for name in LEARNED:
            sa, sb = a[name].module.state_dict(), b[name].module.state_dict()
            assert list(sa) == list(sb)
            for key in sa:
                torch.testing.assert_close(sb[key], sa[key], atol=ATOL, rtol=0,
                                           msg=f"{name} {key}")
            assert not b[name].module.training
            target = shadow(50, seed=99)
            np.testing.assert_allclose(b[name].score(target), a[name].score(target),
                                       atol=1e-4)
        # Training moved the networks: a test of weights that never changed would pass.
        fresh = make_attack("nn", num_classes=C).build().state_dict()
        assert not torch.equal(fresh["0.weight"], a["nn"].module.state_dict()["0.weight"])


def test_fit_leaves_the_callers_rng_alone():
    state = torch.random.get_rng_state()
    spec = AttackSpec(names=("nn", "samia"), epochs=1, batch_size=32)
    fit_attack_sets([(Knowledge(shadow=shadow(64, i)), spec, C) for i in (0, 1)])
    assert torch.equal(torch.random.get_rng_state(), state)


def test_dropout_mask_from_a_generator_is_the_forward_mask():
    drop = Dropout(0.3).train()
    x = torch.ones(4, 50)
    torch.manual_seed(5)
    out = drop(x)
    mask = torch.empty(4, 50)
    drop.draw_mask(mask, torch.Generator().manual_seed(5))
    assert torch.equal(out, mask)
    assert mask.unique().tolist() == [0.0, pytest.approx(1 / 0.7)]


def test_samia_net_is_the_generic_encoder_in_fp32():
    """Same init from the same seed as nn.TransformerEncoder's, same eval outputs."""
    torch.manual_seed(3)
    ours = SAMIANet(C).eval()
    torch.manual_seed(3)
    norm = nn.BatchNorm1d(3 * C)
    embed = nn.Sequential(nn.Linear(3, 64), nn.GELU())
    layer = nn.TransformerEncoderLayer(64, 4, dim_feedforward=128, dropout=0.2,
                                       activation="gelu", batch_first=True)
    encoder = nn.TransformerEncoder(layer, 3, enable_nested_tensor=False)
    head = nn.Sequential(nn.Flatten(), nn.Linear(C * 64, 64), nn.ReLU(), nn.Linear(64, 2))
    # Then the authors' init over the same modules in the same order: Xavier on every
    # plain Linear, attention's out-projection (a Linear subclass) left as it is.
    init_attack_weights(nn.ModuleList([norm, embed, encoder, head]))
    generic = {**{f"norm.{k}": v for k, v in norm.state_dict().items()},
               **{f"embed.{k}": v for k, v in embed.state_dict().items()},
               **{f"encoder.{k}": v for k, v in encoder.state_dict().items()},
               **{f"head.{k}": v for k, v in head.state_dict().items()}}
    assert list(ours.state_dict()) == list(generic)
    for k, v in ours.state_dict().items():
        assert torch.equal(v, generic[k]), k
    x = torch.rand(17, 3 * C)
    for m in (norm, embed, encoder, head):
        m.eval()
    with torch.no_grad():
        tokens = norm(x).view(17, 3, C).transpose(1, 2)
        expected = head(encoder(embed(tokens)))
        torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=1e-5)


def test_a_job_of_fits_stores_each_fit_as_its_lone_fit(tmp_path):
    """ensure_attack_fits on two real fits (digits shadows): stored stacked, equal to lone."""
    from sweep_driver import tiny_grid

    from mia_ray.pipeline import (
        ATTACK_FITS,
        attack_seed,
        ensure_attack_fits,
        ensure_features,
        ensure_models,
    )
    from mia_ray.store import ArtifactStore

    grid = tiny_grid(methods=("l1_unstructured",), knowledge=("original", "full"),
                     strengths=(0.0,),
                     attacks=AttackSpec(names=("gap", "nn", "nn_top3", "samia"), epochs=2))
    fits = list({c.attack_fit().key(): c.attack_fit() for c in grid.cells()}.values())
    assert len(fits) == 2
    store = ArtifactStore(str(tmp_path))
    ensure_models([s for f in fits for s in f.shadows], store, device=torch.device("cpu"))
    stacked = ensure_attack_fits(fits, store, device=torch.device("cpu"))
    for fit, attacks in zip(fits, stacked):
        assert store.meta(ATTACK_FITS, fit.key())["fitted_together"] == 2
        pooled = Features.concat([ensure_features(s, fit.attacks, store) for s in fit.shadows])
        (alone,) = fit_attack_sets([(Knowledge(shadow=pooled), fit.attacks, 10)],
                                   seeds=[attack_seed(fit)], stack=False)
        for name in ("nn", "nn_top3", "samia"):
            sa, sb = alone[name].state_dict(), attacks[name].state_dict()
            for key in sa:
                np.testing.assert_allclose(sb[key], sa[key], atol=ATOL, rtol=0,
                                           err_msg=f"{name} {key}")
    # A second call finds them in the store: same attacks, nothing refitted.
    again = ensure_attack_fits(fits, store)
    assert list(again[0]) == list(stacked[0])
