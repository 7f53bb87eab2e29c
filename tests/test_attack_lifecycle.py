"""One attack lifecycle on a real tiny cell: every attack kind, fitted through the one entry
point on its part of the knowledge, scores what the pure reference functions score on the
same stored arrays, in the evaluation's rows and in the audit's scores alike.

The expected scores are computed here from the stored arrays with the papers' rules
(``lira_offline_scores``, ``rmia_offline_scores``, ``lira_online_scores``,
``rmia_online_scores``, ``qmia_scores``), not through any Attack class, so a wiring
that handed an attack the wrong reference models, the wrong population or the wrong
victim fails here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mia_ray.evaluation as evaluation
from mia_ray.attacks import fit_attacks
from mia_ray.attacks.online import lira_online_scores, rmia_online_scores
from mia_ray.attacks.qmia import (
    QMIA_ALPHA,
    _design,
    fit_quantile_regressor,
    qmia_decision,
    qmia_scores,
)
from mia_ray.attacks.reference import (
    lira_decision,
    lira_offline_scores,
    rmia_decision,
    rmia_offline_scores,
    true_class_logit,
)
from mia_ray.audit.scores import attack_scores
from mia_ray.evaluation import cell_attacks, reference_outputs, run_cell
from mia_ray.features import Features
from mia_ray.knowledge import CellSpec
from mia_ray.metrics import attack_metrics
from mia_ray.pipeline import attack_features, ensure_features
from mia_ray.resolution import resolve_dataset
from mia_ray.results import ResultTables
from mia_ray.specs import AttackSpec, TrainSpec
from mia_ray.store import ArtifactStore

NAMES = ("conf", "qmia", "lira", "rmia", "lira_online", "rmia_online")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A cell with every attack kind, run end to end on a small file of three blobs."""
    root = tmp_path_factory.mktemp("lifecycle")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    x = (rng.normal(size=(3, 8))[y] + 1.5 * rng.normal(size=(300, 8))).astype(np.float32)
    np.savez(root / "blobs.npz", features=x, labels=y)
    cell = CellSpec(dataset=resolve_dataset(str(root / "blobs.npz"), num_shadows=2),
                    arch="fc", knowledge="original", num_references=4,
                    attacks=AttackSpec(names=NAMES, epochs=1, sens_draws=2),
                    train=TrainSpec(max_epochs=3))
    store = ArtifactStore(str(root / "store"))
    rows = run_cell(cell, store, ResultTables(str(root / "results")), device=CPU)
    return cell, store, rows


def _p_y(prob: np.ndarray, label: np.ndarray) -> np.ndarray:
    """True-class probability by indexing, (..., n, C) -> (..., n)."""
    return prob[..., np.arange(len(label)), label]


def _expected(cell: CellSpec, store: ArtifactStore) -> tuple[Features, dict, dict]:
    """(victim features, scores, decisions) of every attack, from the stored arrays."""
    feats = attack_features(cell.victim(), cell.attacks, store)
    offline = reference_outputs(cell, store, device=CPU)
    online = reference_outputs(cell, store, device=CPU, online=True)
    label, pop_label = feats.label, offline.population_label
    phi = true_class_logit(feats.prob, label)
    regressor = fit_quantile_regressor(
        offline.population_inputs, pop_label,
        true_class_logit(offline.target_population_prob, pop_label),
        alpha=QMIA_ALPHA, num_classes=3)
    shadow = Features.concat([ensure_features(s, cell.attacks, store) for s in cell.shadows()])
    conf = fit_attacks(shadow, AttackSpec(names=("conf",)), num_classes=3)["conf"]
    scores = {
        "conf": conf.score(feats),
        "qmia": qmia_scores(phi, regressor.predict(_design(offline.audit_inputs, label))),
        "lira": lira_offline_scores(phi, true_class_logit(offline.audit_prob, label)),
        "rmia": rmia_offline_scores(
            _p_y(feats.prob, label), _p_y(offline.audit_prob, label),
            _p_y(offline.target_population_prob, pop_label),
            _p_y(offline.population_prob, pop_label), pop_ref_out=offline.population_out),
        "lira_online": lira_online_scores(phi, true_class_logit(online.audit_prob, label),
                                          online.audit_in),
        "rmia_online": rmia_online_scores(
            _p_y(feats.prob, label), _p_y(online.audit_prob, label),
            _p_y(online.target_population_prob, pop_label),
            _p_y(online.population_prob, pop_label)),
    }
    decisions = {"conf": conf.decide(feats), "qmia": qmia_decision(scores["qmia"]),
                 "lira": lira_decision(scores["lira"]), "rmia": rmia_decision(scores["rmia"]),
                 "lira_online": scores["lira_online"] > 0,
                 "rmia_online": rmia_decision(scores["rmia_online"])}
    # The test tells the reference sets apart: offline LiRA on the online references
    # would score differently.
    assert not np.array_equal(scores["lira"], lira_offline_scores(
        phi, true_class_logit(online.audit_prob, label)))
    return feats, scores, decisions


def test_every_attack_scores_as_its_reference_rule_in_the_rows_and_the_audit(finished):
    cell, store, rows = finished
    feats, scores, decisions = _expected(cell, store)
    assert [r["attack"] for r in rows] == list(NAMES)
    fitted = cell_attacks(cell, store, device=CPU)
    assert list(fitted) == list(NAMES)
    for row in rows:
        name = row["attack"]
        np.testing.assert_array_equal(fitted[name].score(feats), scores[name], err_msg=name)
        np.testing.assert_array_equal(fitted[name].decide(feats), decisions[name],
                                      err_msg=name)
        metrics = attack_metrics(feats.member, scores[name], decisions[name])
        assert (row["auc"], row["accuracy"]) == (metrics["auc"], metrics["accuracy"]), name
        member, audited = attack_scores(cell, name, store)
        np.testing.assert_array_equal(member, feats.member)
        np.testing.assert_array_equal(audited, scores[name], err_msg=name)


@pytest.mark.parametrize(("names", "built"), [
    (("conf",), []), (("lira", "qmia"), [False]), (("rmia_online",), [True]),
    (NAMES, [False, True])])
def test_only_the_knowledge_the_named_attacks_need_is_built(finished, monkeypatch, names,
                                                            built):
    cell, store, _ = finished
    calls: list[bool] = []
    real = evaluation.reference_outputs

    def counted(cell, store, *, device=None, online=False):
        calls.append(online)
        return real(cell, store, device=device, online=online)

    monkeypatch.setattr(evaluation, "reference_outputs", counted)
    assert list(cell_attacks(cell, store, names=names, device=CPU)) == list(names)
    assert calls == built
