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
from mia_ray.audit.compare import halves, measure, paired_delta, strongest
from mia_ray.catalog import DatasetInfo
from mia_ray.models import build_model
from mia_ray.pipeline import ensure_model
from mia_ray.resolution import resolve_dataset
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
    data = resolve_dataset(str(root / "digits.npz"))
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
    np.save(root / "three.npy", np.array([4, 8, 15]))
    assert "at least 4 members" in one_error(capsys, audit(root, members="three.npy"))
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
    fc = resolve_dataset(str(root / "digits.npz"))
    torch.save(build_model("fc", fc, seed=0).state_dict(), root / "fc.pt")
    err = one_error(capsys, audit(root, "--methods", "slimming", model="fc.pt"))
    assert "method='slimming'" in err and "no BatchNorm" in err


def test_the_audited_victim_is_never_trained_by_the_engine(digits_files, tmp_path):
    root, data, _ = digits_files
    audited = resolve_dataset(str(root / "digits.npz"), members="abc",
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
    """Variants as (method, sparsity, test_acc, auc, delta_auc, delta_lo, delta_hi)."""
    df = pd.DataFrame(rows, columns=["method", "sparsity", "test_acc", "auc", "delta_auc",
                                     "delta_auc_lo", "delta_auc_hi"])
    return df.assign(defense="none", strength=0.0, attack="conf", auc_lo=df.auc - 0.04,
                     auc_hi=df.auc + 0.04, tpr=np.nan, tpr_lo=np.nan, tpr_hi=np.nan,
                     delta_tpr_at_1pct_fpr=np.nan, delta_tpr_at_1pct_fpr_lo=np.nan,
                     delta_tpr_at_1pct_fpr_hi=np.nan)


ORIGINAL = ("none", 0.0, 0.95, 0.70, 0.0, 0.0, 0.0)


def test_the_answer_says_pruning_raises_leakage_and_to_keep_the_original():
    """The issue's case: the only candidate leaks clearly more than the original."""
    table = variants(_summary([ORIGINAL, ("l1_unstructured", 0.5, 0.94, 0.78, 0.08, 0.03, 0.12),
                               ("l1_unstructured", 0.9, 0.80, 0.71, 0.01, -0.03, 0.05)]))
    assert answer(table, 2) == (
        "Pruning raises leakage: 1 of 2 variants leak measurably more than the original "
        "(strongest attack's AUC 0.700), by up to +0.080 AUC (l1_unstructured at sparsity 0.5 "
        "(+0.080 [+0.030, +0.120])); 1 of 2 do not measurably change it. "
        "Within 2 points of the original accuracy (0.950), do not prune: every variant that "
        "close leaks measurably more than the original (l1_unstructured at sparsity 0.5 "
        "(+0.080 [+0.030, +0.120])).")


def test_the_answer_names_the_variant_that_leaks_measurably_less():
    table = variants(_summary([ORIGINAL,
                               ("l1_unstructured", 0.5, 0.94, 0.55, -0.15, -0.19, -0.11),
                               ("slimming", 0.5, 0.935, 0.65, -0.05, -0.09, -0.01),
                               ("l1_unstructured", 0.9, 0.80, 0.51, -0.19, -0.23, -0.15)]))
    text = answer(table, 2)
    assert text.startswith("Pruning lowers leakage: 3 of 3 variants leak measurably less than "
                           "the original (strongest attack's AUC 0.700), by up to -0.190 AUC")
    assert text.endswith("Within 2 points of the original accuracy (0.950), choose "
                         "l1_unstructured at sparsity 0.5: it leaks least (AUC 0.550 "
                         "[0.510, 0.590], -0.150 [-0.190, -0.110] against the original) at "
                         "test accuracy 0.940.")
    # slimming 0.5 is worse on both axes than l1 at 0.5; the others trade one for the other
    assert dict(zip(table.method + "@" + table.sparsity.astype(str), table.pareto)) == {
        "none@0.0": True, "l1_unstructured@0.5": True, "l1_unstructured@0.9": True,
        "slimming@0.5": False}
    assert answer(table, 0.1).endswith(
        "Do not prune: no pruned variant stays within 0.1 points of the original accuracy "
        "(0.950); the closest is l1_unstructured at sparsity 0.5 at 0.940.")


def test_the_answer_says_when_the_intervals_cannot_separate_the_candidates():
    unclear = variants(_summary([ORIGINAL, ("l1_unstructured", 0.5, 0.94, 0.68, -0.02, -0.06,
                                            0.02), ("slimming", 0.5, 0.945, 0.71, 0.01, -0.03,
                                                    0.05)]))
    text = answer(unclear, 2)
    assert text.startswith("Pruning does not measurably change leakage: every variant's AUC "
                           "differs from the original's (0.700) by an amount whose 95% "
                           "interval includes zero (from -0.020 to +0.010).")
    assert "cannot separate the original from l1_unstructured at sparsity 0.5" in text
    assert "the original (do not prune) is as good a choice" in text
    both = variants(_summary([ORIGINAL, ("l1_unstructured", 0.5, 0.94, 0.60, -0.10, -0.14,
                                         -0.06), ("slimming", 0.5, 0.945, 0.62, -0.08, -0.12,
                                                  -0.04)]))
    assert "l1_unstructured at sparsity 0.5 and slimming at sparsity 0.5 (-0.080 [-0.120, " \
           "-0.040]) leak measurably less than the original and the intervals cannot " \
           "separate them" in answer(both, 2)


def test_paired_delta_is_exact_where_worked_out_by_hand():
    # members score 3 and 1, non-members 2 and 0: 3 of the 4 member/non-member pairs are
    # ordered right, so AUC 0.75. The same scores for both models: a change of exactly 0.
    member = np.array([True, True, False, False])
    same = paired_delta(member, np.array([3, 1, 2, 0.]), np.array([3, 1, 2, 0.]), seed=0)
    assert (same["delta_auc"], same["delta_auc_lo"], same["delta_auc_hi"]) == (0, 0, 0)
    # A constant score ties every pair (AUC 1/2 in every resample); a perfect one orders
    # every pair (AUC 1 in every resample): the change is 1/2 in every resample.
    member = np.r_[np.ones(50, bool), np.zeros(50, bool)]
    perfect = paired_delta(member, np.zeros(100), member.astype(float), seed=0)
    assert (perfect["delta_auc"], perfect["delta_auc_lo"], perfect["delta_auc_hi"]) == (
        0.5, 0.5, 0.5)
    # 100 non-members cannot support TPR at 1% FPR (under 10 false positives): n/a
    assert np.isnan(perfect["delta_tpr_at_1pct_fpr"])
    many = np.r_[np.ones(1000, bool), np.zeros(1000, bool)]
    supported = paired_delta(many, np.zeros(2000), many.astype(float), seed=0)
    assert supported["delta_tpr_at_1pct_fpr"] == 1.0  # 0 with ties everywhere, 1 when perfect


def test_paired_delta_interval_is_narrower_than_unpaired_and_covers_the_change():
    rng = np.random.default_rng(0)
    member = np.r_[np.ones(300, bool), np.zeros(300, bool)]
    base = rng.normal(size=600) + 0.5 * member
    variant = base + rng.normal(scale=0.3, size=600) + 0.2 * member  # a little more leakage
    d = paired_delta(member, base, variant, seed=1)
    assert d == paired_delta(member, base, variant, seed=1)  # seeded
    assert d["delta_auc_lo"] < d["delta_auc"] < d["delta_auc_hi"]
    assert d["delta_auc_lo"] > 0  # the shift is found
    a, b = measure(member, base, seed=1), measure(member, variant, seed=1)
    assert d["delta_auc"] == pytest.approx(b["auc"] - a["auc"])
    # unpaired: the two intervals' widths add up; pairing cancels the shared noise
    unpaired = (a["auc_hi"] - a["auc_lo"]) + (b["auc_hi"] - b["auc_lo"])
    assert d["delta_auc_hi"] - d["delta_auc_lo"] < unpaired / 2


def test_the_strongest_attack_is_chosen_on_one_half_and_reported_on_the_other():
    member = np.r_[np.ones(40, bool), np.zeros(40, bool)]
    select = halves(member, seed=3)
    assert select.sum() == 40 and (select & member).sum() == 20  # stratified halves
    assert np.array_equal(select, halves(member, seed=3))
    # "lucky" separates the selection half perfectly and the report half not at all
    lucky = np.where(select, member.astype(float), 0.0)
    steady = member + np.random.default_rng(0).normal(scale=2.0, size=80)
    assert strongest(member, {"steady": steady, "lucky": lucky}, select) == "lucky"
    report = ~select
    assert measure(member[report], lucky[report], seed=0)["auc"] == 0.5  # no optimism left
    assert strongest(member, {"a": steady, "b": steady}, select) == "a"  # ties: first named


def test_page_is_written_with_its_figure(tmp_path):
    page = write_audit_page(_summary([ORIGINAL, ("l1_unstructured", 0.5, 0.94, 0.55, -0.15,
                                                 -0.19, -0.11)]), tmp_path, title="t")
    text = page.read_text()
    assert "data:image/png;base64," in text and "leaks least" in text
    # The answer is the page's first paragraph, and it opens with the change
    first = text.split("<p", 1)[1].split(">", 1)[1].split("</p>")[0]
    assert first.startswith("Pruning lowers leakage: 1 of 1 variants")
    assert "-0.150 [-0.190, -0.110]" in text and "n/a" in text  # TPR unsupported here
    assert (tmp_path / "audit_pareto.png").stat().st_size > 10_000


# --- end to end on the engine ------------------------------------------------------------

def _train_overfit(data: DatasetSpec, members: np.ndarray, path) -> None:
    """The user's model: a small CNN fitted to 300 digits until it memorises them."""
    from mia_ray.audit.demo import train_overfit

    train_overfit(data, members, path)


@pytest.mark.slow
def test_audit_of_an_overfit_digits_model_finds_it_leaking(digits_files, ray_session, capsys):
    """A result, not plumbing: a memorising model is found leaking (AUC > 0.55 on the
    report half) by the audit's attacks, LiRA and RMIA among them. Its sizes (300 members,
    two shadows, 15 epochs) are what make that finding hold, so they stay."""
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
    assert original.test_acc > 0.85  # 300 members + 300 non-members, in two halves:
    assert original.n_audited == 300 and original.n_selection == 300
    variant = summary[summary.method != "none"].iloc[0]
    assert variant.delta_auc_lo <= variant.delta_auc <= variant.delta_auc_hi
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


@pytest.mark.slow
def test_audit_of_a_referenced_architecture_on_a_file_with_its_own_name(tmp_path, ray_session):
    """The README's route with --arch package.module:function on 'glyphs.npz' (a stem no
    built-in dataset has), on a local Ray: rows named glyphs, deltas in audit.parquet.
    It also checks a result (the memorised members seen, AUC > 0.55), which the
    victim's 40 epochs of memorising buy: its sizes stay."""
    from mia_ray.audit.demo import train_overfit

    arch = "tests.user_archs:conv_bn_net"
    x, y = load_digits(return_X_y=True)
    images = (x[:600].reshape(-1, 8, 8) * 16).clip(0, 255).astype(np.uint8)
    np.savez(tmp_path / "glyphs.npz", features=images, labels=y[:600])
    members = np.sort(np.random.default_rng(1).choice(600, 200, replace=False))
    np.save(tmp_path / "members.npy", members)
    train_overfit(resolve_dataset(str(tmp_path / "glyphs.npz")), members,
                  tmp_path / "model.pt", arch=arch, epochs=40)
    out = tmp_path / "audit"
    assert main(["--model", str(tmp_path / "model.pt"), "--arch", arch,
                 "--data", str(tmp_path / "glyphs.npz"), "--members",
                 str(tmp_path / "members.npy"), "--storage", str(out), "--methods",
                 "l1_unstructured", "--sparsities", "0.5", "--shadows", "1", "--epochs",
                 "5", "--finetune-epochs", "2", "--attacks", "conf,mentr,top1_conf"]) == 0
    attacks = pd.read_parquet(out / "attacks")
    assert set(attacks.dataset) == {"glyphs"} and len(attacks) == 2 * 3
    assert (attacks.arch == arch).all()
    summary = pd.read_parquet(out / "audit.parquet").set_index("sparsity")
    # 200 members and 200 held-out non-members, cut in two stratified halves
    assert (summary.n_audited == 200).all() and (summary.n_selection == 200).all()
    original = summary.loc[0.0]
    assert (original.delta_auc, original.delta_auc_lo, original.delta_auc_hi) == (0, 0, 0)
    assert original.auc > 0.55  # memorised members: the attacks see it on the report half
    pruned = summary.loc[0.5]
    assert pruned.delta_auc_lo <= pruned.delta_auc <= pruned.delta_auc_hi
    assert pruned.delta_auc == pytest.approx(pruned.auc - original.auc)
    assert pruned.attack in {"conf", "mentr", "top1_conf"}
    # 200 non-members in the report half cannot support TPR at 1% FPR: n/a, not a number
    assert summary.delta_tpr_at_1pct_fpr.isna().all() and summary.tpr.isna().all()
    page = (out / "audit.html").read_text()
    first = page.split('<p class="answer" id="answer">', 1)[1]
    assert first.startswith("Pruning ") and "the original" in first.split("</p>")[0]
