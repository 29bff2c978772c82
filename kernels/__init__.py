"""Triton kernels, one module per kernel family. Importable as `hpcbench.kernels`.

Importing a kernel module decorates its kernels, and Triton decides at that moment whether they
run compiled or in the CPU interpreter (TRITON_INTERPRET=1). Import these modules only after the
device is chosen (hpcbench.runtime.device.resolve_device sets the variable for CPU runs).
"""
