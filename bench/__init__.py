"""Benchmarks: plan cases, time runners interleaved, write stamped reports.

The core (cases, timing, report, rows that run exported files) is torch-free and runs on a board;
`bench.torch_rows` holds the PyTorch rows and is imported only where PyTorch is installed.
"""
