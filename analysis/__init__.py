"""Turn the Parquet results of a sweep into the paper's tables, figures and claim verdicts.

- :mod:`analysis.load`: read the tables into pandas and pivot them (no plotting).
- :mod:`analysis.claims`: the four claims, each checked by a documented test.
- :mod:`analysis.figures`: the PNG figures, each with a caption carrying its numbers.
- :mod:`analysis.report`: ``report.md`` / ``report.html``; ``python -m analysis.report DIR``.
"""

from analysis.claims import Claim, check_claims
from analysis.load import Results, load_results
from analysis.report import generate_report

__all__ = ["Claim", "Results", "check_claims", "generate_report", "load_results"]
