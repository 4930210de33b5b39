"""Layer 6, report: showing scores and results to people and to tools.

Owns the terminal leaderboard and its Markdown/LaTeX/CSV/JSON forms (:mod:`~optbench.report.render`), plots drawn
in parallel and cached under ``<results>/.optbench-cache/plots`` (:mod:`~optbench.report.plots`), the static HTML
report (:mod:`~optbench.report.html`) and what every page and plot shares: escaping, file-safe names, tables,
plain-text tick labels (:mod:`~optbench.report.pages`). It reads the store in bulk and asks scoring for every number.

May import: the core, the store, scoring (and the lower layers; it needs no engine).
Must never import: recipes, commands or cli. A recipe's own report section (a batch-size sweep, curvature) is
handed in by the layer above, never imported from here. Enforced by tests/test_layering.py.
"""
