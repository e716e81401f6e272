"""The `isegprobe` command and `python -m isegprobe` (torchrun launches it this way).

Ctrl-C and SIGTERM are made safe for imports (`interrupts.py`) before the command line and its libraries are
imported, so that an interruption at any moment ends with the status of its signal (130, 143), and its last line is
the command's own.
"""

import sys

from isegprobe.interrupts import exit_status, how_stopped, interrupt_between_imports


def run() -> None:
    interrupt_between_imports()
    try:
        from isegprobe.cli import main
    except KeyboardInterrupt as interrupt:
        print(how_stopped(interrupt), file=sys.stderr)
        sys.exit(exit_status(interrupt))
    main()


if __name__ == "__main__":
    run()
