"""hpcbench: microbenchmarks for the efficiency techniques of large-scale training.

The package is laid out by layer (docs/architecture.md); `hpcbench.api.names` keeps the public
plugin names (`hpcbench.family`, `hpcbench.timing`, ...) and the modules' older names importable.
"""

__version__ = "0.1.0"

from hpcbench.api import names as _names  # noqa: E402

_names.install()
