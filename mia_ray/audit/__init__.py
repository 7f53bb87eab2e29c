"""Audit a trained model: how much more does it leak once pruned, and which pruning
method and sparsity leak least at the accuracy you need (``python -m mia_ray.audit``).

``inputs`` reads and checks the user's model and member set, ``grid`` plans the audit
as a grid on the sweep engine, ``scores`` recomputes every attack's per-sample scores,
``compare`` chooses the strongest attack out of sample and measures each variant's
change against the original with paired bootstrap intervals, and ``cli`` ties them
together; the page itself is ``analysis/audit_page.py``.
"""
