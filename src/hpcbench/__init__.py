"""hpcbench: microbenchmarks for the efficiency techniques of large-scale training."""

__version__ = "0.1.0"
