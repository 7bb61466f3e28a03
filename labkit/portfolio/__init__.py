"""Portfolio: turn a run directory into case-study pages (Markdown + one HTML file)."""

from labkit.portfolio.build import build

__all__ = ["build"]
