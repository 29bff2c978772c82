"""pytest-benchmark cases for hpcbench's families: `pytest benchmarks/ --benchmark-enable --benchmark-json out.json`."""
