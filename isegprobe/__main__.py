"""The `isegprobe` command and `python -m isegprobe` (torchrun launches it this way).

Ctrl-C is made safe for imports (`interrupts.py`) before the command line and its libraries are imported, so that
an interruption at any moment ends with the status 130 of one, and its last line is the command's own.
"""

import sys

from isegprobe.interrupts import INTERRUPTED_STATUS, interrupt_between_imports


def run() -> None:
    interrupt_between_imports()
    try:
        from isegprobe.cli import main
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(INTERRUPTED_STATUS)
    main()


if __name__ == "__main__":
    run()
