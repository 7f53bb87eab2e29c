"""Audit a trained model: how much more does it leak once pruned, and which pruning
method and sparsity leak least at the accuracy you need (``python -m mia_ray.audit``).

``inputs`` reads and checks the user's model and member set, ``grid`` plans the audit
as a grid on the sweep engine, ``scores`` recomputes the strongest attack's scores for
bootstrap confidence intervals, and ``cli`` ties them together; the page itself is
``analysis/audit_page.py``.
"""
