"""The reproduction report: plan the runs of a profile, train and evaluate them resumably, aggregate over
seeds, and render docs/results.md with its plots from the results JSON (`benchmarks/reproduce.py`)."""
