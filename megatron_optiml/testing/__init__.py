"""What only tests and benchmarks use: a multi-rank gloo harness, the workloads its ranks run,
fault injection. Library code never imports it (``tests/testing/test_layering.py``)."""
