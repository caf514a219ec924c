"""Can this Python install every wheel in a folder? scripts/device-check asks before it runs pip.

    python scripts/wheel_tags.py [DIR]        (DIR: .whl)

Exit 0 when every wheel fits this interpreter; else exit 2, naming each wheel that does not and
why, and the command that refills the folder for this Python. A wheel fits when it is pure
(`py3-none-any`) or built for this CPython (`cp312-cp312`, or `abi3` from an older CPython 3) on a
manylinux (glibc no newer than this machine's) or linux platform of this machine's architecture.
Why a check first: `pip install --no-index` of a folder filled for another Python fails as a
whole, and the device check would then lose every section. Standard library only: it runs before
anything is installed.
"""

from __future__ import annotations

import platform
import re
import sys
from pathlib import Path

LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}


def parse_wheel_name(filename: str) -> tuple[str, str, set[str], set[str], set[str]]:
    """(name, version, python tags, abi tags, platform tags) of a wheel file name (PEP 427)."""
    if not filename.endswith(".whl"):
        raise ValueError(f"{filename}: not a .whl file")
    parts = filename[: -len(".whl")].split("-")
    if len(parts) not in (5, 6):
        raise ValueError(f"{filename}: not a wheel name (name-version[-build]-python-abi-platform.whl)")
    name, version, pythons, abis, platforms = parts[0], parts[1], *parts[-3:]
    return name, version, set(pythons.split(".")), set(abis.split(".")), set(platforms.split("."))


def _platform_fits(tag: str, machine: str, glibc: tuple[int, int] | None) -> bool:
    if tag == "any":
        return True
    if tag == f"linux_{machine}":
        return True
    if glibc is None or not tag.endswith(f"_{machine}"):
        return False
    legacy = tag[: -len(machine) - 1]
    if legacy in LEGACY_MANYLINUX:
        return LEGACY_MANYLINUX[legacy] <= glibc
    match = re.fullmatch(rf"manylinux_(\d+)_(\d+)_{re.escape(machine)}", tag)
    return bool(match) and (int(match[1]), int(match[2])) <= glibc


def why_not(filename: str, python: tuple[int, int], machine: str, glibc: tuple[int, int] | None) -> str | None:
    """None when the wheel installs on CPython `python` on `machine` with `glibc`, else why not."""
    try:
        _, _, pythons, abis, platforms = parse_wheel_name(filename)
    except ValueError as error:
        return str(error)
    major, minor = python
    pure = "none" in abis and bool(pythons & {"py3", f"py{major}{minor}", f"cp{major}{minor}"})
    exact = f"cp{major}{minor}" in pythons and f"cp{major}{minor}" in abis
    stable = "abi3" in abis and any(re.fullmatch(rf"cp{major}(\d+)", tag) and int(tag[3:]) <= minor for tag in pythons)
    if not (pure or exact or stable):
        return f"built for {'.'.join(sorted(pythons))}-{'.'.join(sorted(abis))}, not CPython {major}.{minor}"
    if not any(_platform_fits(tag, machine, glibc) for tag in platforms):
        where = f"{machine}, glibc {'.'.join(map(str, glibc))}" if glibc else f"{machine} without glibc"
        return f"built for {'.'.join(sorted(platforms))}, not this machine ({where})"
    return None


def problems(folder: Path, python: tuple[int, int], machine: str, glibc: tuple[int, int] | None) -> list[str]:
    """One line per wheel that does not fit, and per package with more than one wheel."""
    found = sorted(path.name for path in folder.glob("*.whl"))
    lines = [f"{name}: {reason}" for name in found if (reason := why_not(name, python, machine, glibc))]
    names: dict[str, list[str]] = {}
    for name in found:
        try:
            names.setdefault(parse_wheel_name(name)[0].lower().replace("-", "_"), []).append(name)
        except ValueError:
            pass
    lines += [f"{package}: {len(wheels)} wheels ({', '.join(wheels)}); pip installs one" for package, wheels in names.items()
              if len(wheels) > 1]
    return lines


def this_machine() -> tuple[tuple[int, int], str, tuple[int, int] | None]:
    library, version = platform.libc_ver()
    glibc = tuple(int(part) for part in version.split(".")[:2]) if library == "glibc" and version else None
    return sys.version_info[:2], platform.machine(), glibc  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    folder = Path(args[0] if args else ".whl")
    python, machine, glibc = this_machine()
    bad = problems(folder, python, machine, glibc)
    if not bad:
        return 0
    version = f"{python[0]}.{python[1]}"
    print(f"error: {folder}/ holds wheels that Python {version} on {machine} cannot install:", file=sys.stderr)
    for line in bad:
        print(f"  {line}", file=sys.stderr)
    print(f"Refill it for this Python where PyPI is reachable, then carry {folder} again:\n"
          f"  rm -rf {folder} && bash scripts/wheelhouse --python-version {version}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
