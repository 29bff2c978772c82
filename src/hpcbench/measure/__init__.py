"""Measurement primitives the families share: timing on one device (events, graphs, the CPU
clock) and across ranks, stragglers, energy and clocks (NVML), a side stream for overlap,
overlap metrics, and the accuracy references of low-precision GEMMs."""
