"""Benchmarks: each prints its figures and ratios against a baseline measured in the same run."""

import hetmap  # noqa: F401  first: it sets how torch's threads wait before any benchmark loads torch
