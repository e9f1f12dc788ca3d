"""The report: the paper's Table 2 and Table 3 (mean ± std over seeds), DVC metrics, plots, index."""
