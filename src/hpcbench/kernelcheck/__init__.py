"""`hpcbench compile-kernels`: every Triton kernel compiled for a named GPU architecture without
a GPU (check: compile and inspect; jobs: what to compile; cli: the command).

`hpcbench.kernelcheck` was a module before it became this package: its names still resolve here,
with a DeprecationWarning, for one release (use `hpcbench.kernelcheck.check`)."""


def __getattr__(name: str):
    import importlib
    import warnings

    check = importlib.import_module("hpcbench.kernelcheck.check")
    if name.startswith("__") or not hasattr(check, name):
        raise AttributeError(f"module 'hpcbench.kernelcheck' has no attribute {name!r}")
    warnings.warn(f"hpcbench.kernelcheck.{name} moved to hpcbench.kernelcheck.check.{name}; the old name goes in "
                  "the next release", DeprecationWarning, stacklevel=2)
    globals()[name] = value = getattr(check, name)  # warned once: `from ... import` looks twice
    return value
