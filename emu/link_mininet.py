"""Make the project's interpreter see Debian's Mininet, and nothing else from the system.

Debian installs Mininet (`apt-get install mininet cgroup-tools`) for the system Python, under
`/usr/lib/python3/dist-packages/mininet`. The project's venv must not see the whole of that
directory (it holds other, older copies of packages the venv pins), so this script makes a
directory `<venv>/halp-system/` that holds one symlink, `mininet -> <dist-packages>/mininet`,
and a `halp-system.pth` file in the venv's site-packages that puts that directory on
`sys.path`. Mininet is pure Python plus the `mnexec` binary, so one symlink is all it needs.

    .venv/bin/python emu/link_mininet.py           # link (idempotent), then check the import
    .venv/bin/python emu/link_mininet.py --check   # only check
    .venv/bin/python emu/link_mininet.py --remove  # undo

Run it with the interpreter that should see Mininet. Exits 0 when `import mininet` works
afterwards, 2 with one line saying what is missing otherwise.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import sysconfig
from pathlib import Path

SYSTEM_MININET = Path("/usr/lib/python3/dist-packages/mininet")
LINK_DIR_NAME = "halp-system"
PTH_NAME = "halp-system.pth"
INSTALL_HINT = "the emulator needs root and Mininet (apt-get install mininet cgroup-tools)"


def paths() -> tuple[Path, Path]:
    """(the directory that holds the symlink, the .pth file) for the running interpreter."""
    site = Path(sysconfig.get_paths()["purelib"])
    return Path(sys.prefix) / LINK_DIR_NAME, site / PTH_NAME


def link(source: Path = SYSTEM_MININET) -> str:
    if sys.prefix == sys.base_prefix:
        return f"{sys.executable} is not a virtual environment; run this with the venv's python"
    if not (source / "__init__.py").is_file():
        return f"{source} does not exist; {INSTALL_HINT}"
    link_dir, pth = paths()
    link_dir.mkdir(exist_ok=True)
    target = link_dir / "mininet"
    if target.is_symlink() or target.exists():
        if target.resolve() != source.resolve():
            target.unlink()
    if not target.is_symlink():
        target.symlink_to(source, target_is_directory=True)
    pth.write_text(f"{link_dir}\n")
    return ""


def remove() -> None:
    link_dir, pth = paths()
    pth.unlink(missing_ok=True)
    target = link_dir / "mininet"
    if target.is_symlink():
        target.unlink()
    if link_dir.is_dir() and not any(link_dir.iterdir()):
        link_dir.rmdir()


def check() -> str:
    """Empty when a fresh interpreter imports Mininet from the system package, else why not."""
    code = "import mininet.net, mininet.node, mininet.link; print(mininet.__file__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        return f"{sys.executable} cannot import mininet; {INSTALL_HINT}"
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--check", action="store_true", help="only check that mininet imports")
    action.add_argument("--remove", action="store_true", help="remove the link and the .pth file")
    args = parser.parse_args(argv)
    if args.remove:
        remove()
        print(f"removed {PTH_NAME} and the mininet link from {sys.prefix}")
        return 0
    problem = "" if args.check else link()
    problem = problem or check()
    if problem:
        print(f"link_mininet: {problem}", file=sys.stderr)
        return 2
    if not args.check:
        link_dir, pth = paths()
        print(f"{pth} -> {link_dir}/mininet -> {SYSTEM_MININET}")
    print("mininet imports in this environment")
    return 0


if __name__ == "__main__":
    sys.exit(main())
