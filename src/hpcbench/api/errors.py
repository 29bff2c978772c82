"""Errors a user can cause. The CLI prints them as one line and exits with status 2."""

import argparse


class UserError(Exception):
    """Bad input: an unknown name, an impossible size, a device that is not there."""


class ReportedUserError(UserError):
    """Bad input that a rank has already printed: the exit status is 2, nothing more is said."""


class ImpossibleMeasurement(Exception):
    """A timing or throughput that cannot be true (negative time, above the device's peak)."""


class RunFailed(Exception):
    """A run that could not finish for a reason outside the code: a rank died or hung.

    The CLI prints it as one line and exits with status 1; completed rows are kept."""


class CommandParser(argparse.ArgumentParser):
    """argparse for hpcbench's subcommands, whose usage mistakes are user errors like any other:
    one line (not argparse's usage block) and exit status 2."""

    def error(self, message: str):
        command = self.prog.split(" ", 1)[-1]
        raise UserError(f"{command}: {message} (`{self.prog} --help` lists the arguments)")
