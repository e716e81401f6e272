"""`python -m isegprobe` is the `isegprobe` command (torchrun launches it this way)."""

from isegprobe.cli import main

main()
