"""The catalog: what a grid can name. Datasets, architectures, pruning methods,
defenses, knowledge settings, attacks, and the defaults that go with them.

:mod:`mia_ray.specs` validates every spec against these tables; a new dataset,
architecture, method, defense or attack adds its name here (docs/architecture.md, "Extending").
"""

from __future__ import annotations

from mia_ray.errors import SpecError
from mia_ray.info import (  # defined apart: mia_ray.archs reads them
    ArchInfo,
    ArchReference,
    DatasetInfo,
)

DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo("image", 10, (1, 8, 8), pool=1797),
    "cifar10": DatasetInfo("image", 10, (3, 32, 32), pool=60000),
    "cifar100": DatasetInfo("image", 100, (3, 32, 32), pool=60000),
    "svhn": DatasetInfo("image", 10, (3, 32, 32), pool=99289),
    "chmnist": DatasetInfo("image", 8, (3, 32, 32), pool=5000),
    "purchase100": DatasetInfo("tabular", 100, (600,), pool=197324),
    "texas100": DatasetInfo("tabular", 100, (6169,), pool=67330),
    "location": DatasetInfo("tabular", 30, (446,), pool=5010),
    # Generated offline (mia_ray/data/loaders_mnist1d.py, which reads its size here): a
    # built-in set with signal.
    "mnist1d": DatasetInfo("tabular", 10, (40,), pool=5000),
}


ARCHS: dict[str, ArchInfo] = {
    "fc": ArchInfo(has_conv=False, has_batchnorm=False, input_kinds=("tabular", "image"),
                   stacks=True),
    "small_cnn": ArchInfo(has_conv=True, has_batchnorm=True, input_kinds=("image",),
                          stacks=True),
    "resnet18": ArchInfo(has_conv=True, has_batchnorm=True, input_kinds=("image",)),
    "vgg16_bn": ArchInfo(has_conv=True, has_batchnorm=True, input_kinds=("image",)),
    "densenet121": ArchInfo(has_conv=True, has_batchnorm=True, input_kinds=("image",)),
}

# What a resolved reference admits before a dataset names its inputs: every method.
ANY_LAYERS = ArchInfo(has_conv=True, has_batchnorm=True, input_kinds=("tabular", "image"))

DEFAULT_ARCH = {"digits": "small_cnn", "image": "resnet18", "tabular": "fc"}

# The paper's four, then pruning as deployed today (docs/method.md, "Pruning as
# deployed"): 2:4 semi-structured, global magnitude, iterative magnitude with rewinding.
PAPER_METHODS = ("l1_unstructured", "l1_structured", "l2_structured", "slimming")
PRUNING_METHODS = PAPER_METHODS + ("nm_2_4", "global_unstructured", "imp")
STRUCTURED_METHODS = ("l1_structured", "l2_structured")
# 2:4 semi-structured sparsity removes half of every weight by construction.
NM_SPARSITY = {"nm_2_4": 0.5}
# Iterative magnitude pruning: rounds that reach the deepest sparsity (0.9), and the
# rewind epoch as a share of the original training budget (budget / 20, at least 1).
IMP_ROUNDS = 3
IMP_REFERENCE_SPARSITY = 0.9
REWIND_BUDGET_DIVISOR = 20

# name -> (what strength means, inclusive lower bound)
DEFENSES = {
    "none": "no defense; strength must be 0",
    "ppb": "PPB KL weight lambda >= 0 (0 is plain fine-tuning)",
    "advreg": "adversarial regularisation weight theta >= 0",
    "dpsgd": "DP-SGD noise multiplier sigma > 0",
}

KNOWLEDGE = (
    "original",
    "full",
    "defense_unknown",
    "sparsity_unknown",
    "method_unknown",
    "pruning_unknown",
)

BASELINE_ATTACKS = ("conf", "xent", "mentr", "top1_conf", "nn", "nn_top3", "nn_cls", "gap")
# Online attacks score with the cell's reference models (--references N), half of
# which trained on each audited sample; a cell that names one needs N > 0.
ONLINE_ATTACKS = ("lira_online", "rmia_online")
# Pair attacks query the pruned victim AND its unpruned original on each sample
# (mia_ray.attacks.pair); a cell whose shadows are unpruned has no pair to learn from.
PAIR_ATTACKS = ("pair_sum", "pair_diff", "pair_nn")
# Beyond the paper's threat model (docs/method.md): an adversary who sees only labels,
# and one who trains no model at all and queries the victim on public data instead.
LABEL_ONLY_ATTACKS = ("gap", "label_only")
NO_SHADOW_ATTACKS = ("qmia",)
ATTACKS = (BASELINE_ATTACKS + ("samia", "nn_sens_cls", "lira", "rmia") + ONLINE_ATTACKS
           + ("label_only", "qmia") + PAIR_ATTACKS)
DEFAULT_ATTACKS = BASELINE_ATTACKS + ("samia",)
PAPER_ATTACK_EPOCHS = 100
"""The paper's attack schedule: every learned attack trains 100 epochs (AttackSpec's default)."""
LABEL_QUERIES = 64
"""M, the perturbed queries per sample of ``label_only`` (docs/method.md, "Label-only")."""
MAX_LABEL_QUERIES = 4096

ROLES = ("victim", "shadow", "reference")
# Most reference models per cell (the LiRA paper's largest online setting is 256).
MAX_REFERENCES = 256
# Most models of one cohort a trainer trains together by default (a victim and up to
# seven shadows); see mia_ray.stacking.
STACK_LIMIT = 8
# Most attack fits (shadow sets) a trainer fits together as one job by default; their
# learned attacks' networks of one shape train stacked (mia_ray.attacks.learned.fit_learned).
ATTACK_STACK_LIMIT = 16


def is_arch_reference(arch: object) -> bool:
    """True for ``package.module:function`` (an architecture by reference)."""
    return isinstance(arch, str) and ":" in arch


def arch_info(arch: str, dataset: DatasetInfo | None = None) -> ArchInfo:
    """The :class:`ArchInfo` of a named or resolved architecture; imports nothing.

    A reference (``package.module:function``) admits every pruning method until a
    dataset names its inputs; with one, it must have been resolved for them
    (:func:`mia_ray.resolution.resolve_arch`, which imports and builds it once).
    """
    if isinstance(arch, str) and arch in ARCHS:
        return ARCHS[arch]
    if not is_arch_reference(arch):
        raise SpecError("arch", arch, f"one of {', '.join(repr(a) for a in ARCHS)}, or "
                        "'package.module:function' returning an nn.Module")
    if dataset is None:
        return ANY_LAYERS
    info = arch.info_for(dataset) if isinstance(arch, ArchReference) else None
    if info is None:
        raise SpecError("arch", arch, f"a reference resolved for inputs {dataset.input_shape} "
                        f"with {dataset.num_classes} classes (mia_ray.resolution.resolve_arch "
                        "imports and checks it)")
    return info
