"""One module per `isegprobe` subcommand (cli.py finds them by name).

A command module imports only click and light modules at its top: what the command runs (torch, the stores, the
models, matplotlib) is imported inside its functions. Click builds a command's options from the module, so `isegprobe
train --help` and a mistyped option come back in a fraction of a second instead of after 3 to 7 s of imports; the
libraries load once the options are read (tests/test_cli.py checks every command's --help).
"""
