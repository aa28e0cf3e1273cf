"""autospec's entry points (floor 3): `AutoSpec` (`engine`), the tools (`compare`, `demo`,
`profiler`, `plan`, `distill`) and the command line (`cli`). They may import everything below
them (the kernel in `autospec/`, `autospec.controllers`, `autospec.backends`); nothing below
imports them (`.importlinter`). Each tool names its subcommands in a `COMMANDS` dict read by the CLI.
"""
