"""The large program of `make bench`: CPython compiled to a WASI 0.2 command component.

componentize-py bundles the interpreter, its standard library and this file, pre-initialized,
into one component of about 18 MB, so the shim's compile cache is what decides its start time.
"""

import sys

from wit_world import exports


class Run(exports.Run):
    """wasi:cli/run, the export a command component's host calls."""

    def run(self) -> None:
        print("hello from python", sys.version.split()[0])
