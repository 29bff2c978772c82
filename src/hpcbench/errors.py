"""Errors a user can cause. The CLI prints them as one line and exits with status 2."""


class UserError(Exception):
    """Bad input: an unknown name, an impossible size, a device that is not there."""


class ImpossibleMeasurement(Exception):
    """A timing or throughput that cannot be true (negative time, above the device's peak)."""
