"""The emulator backend: real PyTorch workers in CPU-limited Mininet hosts behind shaped links.

`emu.topology` describes (pure), `emu.network` realises with Mininet, `emu.backend` runs a
scenario on it. Needs root and Mininet; see emu/README.md.
"""
