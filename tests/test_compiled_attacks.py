"""A compiled attack fit against the eager one: same masks, same shuffle, same weights."""

import logging

import numpy as np
import pytest
import torch
from test_stacked_attacks import C, shadow

import mia_ray.eager as compiled
from mia_ray.attacks import make_attack
from mia_ray.attacks.networks import SAMIANet, mlp
from mia_ray.eager import ENV, MIN_COMPILED_STEPS, worth_compiling
from mia_ray.errors import SpecError
from mia_ray.specs import AttackSpec

# Fused kernels round differently from eager ones; two epochs of SGD keep the
# difference near float32 rounding (measured: about 1e-7 on the 4,040-sample fit).
ATOL = 1e-5
SPEC = AttackSpec(names=("samia",), epochs=2, batch_size=32, lr=0.05, seed=3)


def fitted_samia(monkeypatch, setting: str, n: int = 110):
    monkeypatch.setenv(ENV, setting)
    attack = make_attack("samia", num_classes=C)
    attack.fit(shadow(n, seed=1), SPEC)
    return attack


def assert_same_weights(a, b, atol: float) -> None:
    sa, sb = a.module.state_dict(), b.module.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        torch.testing.assert_close(sb[key], sa[key], atol=atol, rtol=0, msg=key)


def test_only_long_fits_of_compiling_networks_compile_unless_told(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    samia, net = SAMIANet(C), mlp(C)
    assert not worth_compiling(samia, MIN_COMPILED_STEPS - 1)
    assert worth_compiling(samia, MIN_COMPILED_STEPS)
    assert not worth_compiling(net, 10 * MIN_COMPILED_STEPS)
    monkeypatch.setenv(ENV, "1")
    assert worth_compiling(net, 1)
    monkeypatch.setenv(ENV, "0")
    assert not worth_compiling(samia, 10 * MIN_COMPILED_STEPS)
    monkeypatch.setenv(ENV, "yes")
    with pytest.raises(SpecError, match=f"{ENV}='yes'.*1.*0"):
        worth_compiling(samia, 1)


def test_a_bad_compile_setting_stops_the_commands_before_any_work(monkeypatch, capsys,
                                                                   tmp_path):
    from mia_ray.cell import main

    monkeypatch.setenv(ENV, "yes")
    code = main(["--store", str(tmp_path / "s"), "--results", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1 and f"{ENV}='yes'" in err
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_compiled_samia_fit_ends_where_the_eager_fit_does(monkeypatch):
    """110 samples at batch 32: three compiled full batches and an eager trailing one
    of 14 per epoch, with BatchNorm statistics and dropout masks that must line up."""
    torch._dynamo.reset()
    eager = fitted_samia(monkeypatch, "0")
    fast = fitted_samia(monkeypatch, "1")
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # it did compile
    assert_same_weights(eager, fast, ATOL)
    assert fast.module.norm.num_batches_tracked.item() == 2 * 4
    target = shadow(50, seed=99)
    np.testing.assert_allclose(fast.score(target), eager.score(target), atol=1e-4)
    # Training moved the network: weights that never changed would also agree.
    fresh = SAMIANet(C).state_dict()
    assert not torch.equal(fresh["head.1.weight"], eager.module.state_dict()["head.1.weight"])


def test_a_failed_compilation_trains_eagerly_and_says_so(monkeypatch, caplog):
    def broken_compile(fn, **_):
        def run(*args, **kwargs):
            raise RuntimeError("no C++ compiler\nlong trace")
        return run

    monkeypatch.setattr(compiled.torch, "compile", broken_compile)
    eager = fitted_samia(monkeypatch, "0")
    with caplog.at_level(logging.WARNING, logger=compiled.__name__):
        fallback = fitted_samia(monkeypatch, "1")
    messages = [r.getMessage() for r in caplog.records if r.name == compiled.__name__]
    assert messages == ["torch.compile failed (RuntimeError: no C++ compiler); "
                        "training this network eagerly"]
    assert_same_weights(eager, fallback, 1e-6)


def test_the_driver_hands_its_compile_setting_to_ray_workers(monkeypatch):
    from mia_ray.engine.cluster import worker_runtime_env

    monkeypatch.delenv(ENV, raising=False)
    assert worker_runtime_env() is None
    monkeypatch.setenv(ENV, "0")
    assert worker_runtime_env() == {"env_vars": {ENV: "0"}}
