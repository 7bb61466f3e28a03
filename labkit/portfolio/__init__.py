"""Portfolio: turn a run directory into case-study pages (Markdown + one HTML file).

    build.py             runs → pages: LabView (helpers that never invent a number), index
    evidence.py          each page's tables as CSV and a scrubbed results.json beside it
    highlights.py        the index's headline results, hero figure and limitations list
    references.py        published reference figures (with sources) shown beside measured ones
    contract.py          the record contract: what a CPU-tier run of each lab must record
    contract_suggest.py  draft a lab's contract from a real run and its template
    template_names.py    the record names a template reads (checked against the contract)
    cli.py               `labkit portfolio build RUN [RUN …]`
"""

from labkit.portfolio.build import build

__all__ = ["build"]
