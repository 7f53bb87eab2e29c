"""python -m mia_ray.audit: bad input stops before any work; a real audit of a digits
model trained here on a known member set finds it leaking and writes audit.html."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_digits

from analysis.audit_page import answer, variants, write_audit_page
from mia_ray.audit.cli import main
from mia_ray.audit.scores import bootstrap_ci
from mia_ray.catalog import DatasetInfo
from mia_ray.models import build_model
from mia_ray.pipeline import ensure_model
from mia_ray.specs import DatasetSpec, ModelSpec
from mia_ray.store import ArtifactStore


@pytest.fixture(scope="module")
def digits_files(tmp_path_factory):
    """digits as 8-bit images (N, H, W) in an npz, 300 members, an untrained model."""
    root = tmp_path_factory.mktemp("audit_inputs")
    x, y = load_digits(return_X_y=True)
    images = (x.reshape(-1, 8, 8) * 16).clip(0, 255).astype(np.uint8)
    np.savez(root / "digits.npz", features=images, labels=y)
    members = np.sort(np.random.default_rng(0).choice(len(y), 300, replace=False))
    np.save(root / "members.npy", members)
    data = DatasetSpec(name=str(root / "digits.npz"))
    torch.save(build_model("small_cnn", data, seed=1).state_dict(), root / "untrained.pt")
    return root, data, members


def audit(root, *extra, model="untrained.pt", members="members.npy"):
    return main(["--model", str(root / model), "--data", str(root / "digits.npz"),
                 "--members", str(root / members), "--storage", str(root / "out"), *extra])


def one_error(capsys, code) -> str:
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1, err
    return err


# --- bad input: one message, exit 2, nothing written -------------------------------------

def test_members_out_of_range_wrong_mask_and_too_few_nonmembers(digits_files, capsys, tmp_path):
    root, _, _ = digits_files
    np.save(root / "far.npy", np.array([0, 5, 1797]))
    assert "position 2 holds 1797" in one_error(capsys, audit(root, members="far.npy"))
    np.save(root / "mask.npy", np.ones(10, bool))
    assert "mask of length 1797" in one_error(capsys, audit(root, members="mask.npy"))
    np.save(root / "most.npy", np.arange(1790))
    assert "leaving 7" in one_error(capsys, audit(root, members="most.npy"))
    assert not (root / "out").exists()


def test_model_of_another_class_count_or_architecture_is_refused(digits_files, capsys):
    root, _, _ = digits_files
    hundred = DatasetInfo("image", 100, (1, 8, 8))  # 100 outputs for 10 classes
    torch.save(build_model("small_cnn", hundred, seed=0).state_dict(), root / "hundred.pt")
    err = one_error(capsys, audit(root, "--arch", "small_cnn", model="hundred.pt"))
    assert "--arch 'small_cnn'" in err and "size mismatch" in err
    err = one_error(capsys, audit(root, model="hundred.pt"))
    assert "weights of a built-in architecture" in err
    err = one_error(capsys, audit(root, "--arch", "nowhere.nets:cnn"))
    assert "importing 'nowhere.nets' failed" in err
    (root / "junk.pt").write_bytes(b"junk")
    assert "neither" in one_error(capsys, audit(root, model="junk.pt"))
    assert not (root / "out").exists()


def test_torchscript_model_is_read_and_its_architecture_recognised(digits_files, tmp_path):
    from mia_ray.audit.inputs import load_audited

    _, data, _ = digits_files
    original = build_model("small_cnn", data, seed=5).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(original), tmp_path / "model.ts")
    model, arch = load_audited(str(tmp_path / "model.ts"), "", data)
    assert arch == "small_cnn"
    for name, tensor in original.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor)


def test_unreadable_data_and_inapplicable_method(digits_files, capsys, tmp_path):
    root, _, _ = digits_files
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"\x00" * 10)
    code = main(["--model", str(root / "untrained.pt"), "--data", str(bad), "--members",
                 str(root / "members.npy"), "--storage", str(tmp_path / "out")])
    assert "bad.npz" in one_error(capsys, code)
    fc = DatasetSpec(name=str(root / "digits.npz"))
    torch.save(build_model("fc", fc, seed=0).state_dict(), root / "fc.pt")
    err = one_error(capsys, audit(root, "--methods", "slimming", model="fc.pt"))
    assert "method='slimming'" in err and "no BatchNorm" in err


def test_the_audited_victim_is_never_trained_by_the_engine(digits_files, tmp_path):
    root, data, _ = digits_files
    audited = DatasetSpec(name=str(root / "digits.npz"), members="abc",
                          members_path=str(root / "members.npy"), audited="123")
    with pytest.raises(RuntimeError, match="imports it before the run"):
        ensure_model(ModelSpec(dataset=audited, arch="small_cnn"),
                     ArtifactStore(str(tmp_path / "s")))


def test_the_readme_command_without_epochs_gets_the_default_budgets(digits_files):
    """A dataset given by path has no reference budget: 100 epochs, half to fine-tune."""
    from mia_ray.audit.cli import build_grid, parse_args

    root, _, _ = digits_files
    argv = ["--model", str(root / "untrained.pt"), "--data", str(root / "digits.npz"),
            "--members", str(root / "members.npy"), "--storage", str(root / "unused"),
            "--methods", "l1_unstructured,l1_structured", "--sparsities", "0.5,0.9"]
    grid, _ = build_grid(parse_args(argv))
    assert (grid.train.max_epochs, grid.finetune.max_epochs) == (100, 50)
    grid, _ = build_grid(parse_args([*argv, "--epochs", "20"]))
    assert (grid.train.max_epochs, grid.finetune.max_epochs) == (20, 10)
    assert not (root / "unused").exists()


# --- the answer and the intervals --------------------------------------------------------

def _summary(rows):
    cols = ["method", "sparsity", "test_acc", "auc", "auc_lo", "auc_hi"]
    df = pd.DataFrame(rows, columns=cols)
    return df.assign(defense="none", strength=0.0, attack="conf", tpr=0.1, tpr_lo=0.0,
                     tpr_hi=0.2)


def test_answer_names_the_least_leaking_variant_or_says_the_data_cannot_tell():
    clear = variants(_summary([("none", 0.0, 0.95, 0.70, 0.66, 0.74),
                               ("l1_unstructured", 0.5, 0.94, 0.55, 0.52, 0.58),
                               ("slimming", 0.5, 0.935, 0.65, 0.61, 0.69),
                               ("l1_unstructured", 0.9, 0.80, 0.51, 0.49, 0.53)]))
    assert answer(clear, 2) == (
        "Within 2 points of the original accuracy (0.950), l1_unstructured at sparsity 0.5 "
        "leaks least (AUC 0.550, 95% CI [0.520, 0.580]; the original: AUC 0.700, "
        "[0.660, 0.740]).")
    # slimming 0.5 is worse on both axes than l1 at 0.5; the others trade one for the other
    assert dict(zip(clear.method + "@" + clear.sparsity.astype(str), clear.pareto)) == {
        "none@0.0": True, "l1_unstructured@0.5": True, "l1_unstructured@0.9": True,
        "slimming@0.5": False}
    close = variants(_summary([("none", 0.0, 0.95, 0.70, 0.66, 0.74),
                               ("l1_unstructured", 0.5, 0.94, 0.55, 0.50, 0.60),
                               ("slimming", 0.5, 0.945, 0.57, 0.53, 0.61)]))
    assert answer(close, 2).startswith("The data cannot separate the options: within 2 points"
                                       " of the original accuracy (0.950), l1_unstructured")
    assert answer(close, 0.1).startswith("No pruned variant stays within 0.1 points")


def test_bootstrap_intervals_are_exact_for_a_perfect_ranking_and_cover_the_auc():
    member = np.r_[np.ones(50, bool), np.zeros(50, bool)]
    ci = bootstrap_ci(member, np.r_[np.ones(50), np.zeros(50)], draws=50)
    assert ci == {"auc_lo": 1.0, "auc_hi": 1.0, "tpr_lo": 1.0, "tpr_hi": 1.0}
    rng = np.random.default_rng(0)
    score = rng.normal(size=100) + member
    ci = bootstrap_ci(member, score, draws=200)
    assert ci == bootstrap_ci(member, score, draws=200)  # seeded
    from mia_ray.metrics import roc_auc

    assert ci["auc_lo"] < roc_auc(member, score) < ci["auc_hi"]
    assert 0.6 < ci["auc_lo"] and ci["auc_hi"] < 0.9


def test_page_is_written_with_its_figure(tmp_path):
    page = write_audit_page(_summary([("none", 0.0, 0.95, 0.70, 0.66, 0.74),
                                      ("l1_unstructured", 0.5, 0.94, 0.55, 0.52, 0.58)]),
                            tmp_path, title="t")
    text = page.read_text()
    assert "data:image/png;base64," in text and "leaks least" in text
    assert (tmp_path / "audit_pareto.png").stat().st_size > 10_000


# --- end to end on the engine ------------------------------------------------------------

def _train_overfit(data: DatasetSpec, members: np.ndarray, path) -> None:
    """The user's model: a small CNN fitted to 300 digits until it memorises them."""
    from mia_ray.audit.demo import train_overfit

    train_overfit(data, members, path)


@pytest.mark.slow
def test_audit_of_an_overfit_digits_model_finds_it_leaking(digits_files, ray_session, capsys):
    root, data, members = digits_files
    _train_overfit(data, members, root / "model.pt")
    args = ["--methods", "l1_unstructured", "--sparsities", "0.5", "--shadows", "2",
            "--epochs", "15", "--finetune-epochs", "5", "--attack-epochs", "3",
            "--attacks", "conf,mentr,nn,lira,rmia"]
    assert audit(root, *args, model="model.pt") == 0
    out = root / "out"
    summary = pd.read_parquet(out / "audit.parquet")
    assert sorted(summary.method) == ["l1_unstructured", "none"]
    original = summary[summary.method == "none"].iloc[0]
    assert original.auc > 0.55 and original.auc_lo < original.auc < original.auc_hi
    assert original.test_acc > 0.85 and original.n_audited == 600  # 300 + 300 non-members
    attacks = pd.read_parquet(out / "attacks")
    assert set(attacks.attack) == {"conf", "mentr", "nn", "lira", "rmia"}
    assert len(attacks) == 10 and attacks.auc.notna().all()
    models = pd.read_parquet(out / "models")
    victim = models[(models.role == "victim") & (models.method == "none")]
    assert list(victim.device) == ["imported"] and victim.train_acc.iloc[0] == 1.0
    assert len(models) == 1 + 2 + 1 + 2  # imported victim, 2 shadows, each pruned once
    page = (out / "audit.html").read_text()
    assert 'id="answer"' in page and "l1_unstructured" in page
    assert "audit.html" in capsys.readouterr().out
