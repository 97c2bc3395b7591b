"""What the lab's tools are: the Debian package and version behind each executable."""

from __future__ import annotations

import os
import subprocess
from functools import lru_cache

from multa_broker.lab.scenario import find_tool


@lru_cache(maxsize=None)
def package_of(tool: str) -> tuple[str, str] | None:
    """(package, version) of the Debian package that ships ``tool``, or None."""
    path = find_tool(tool)
    if path is None:
        return None
    # dpkg records paths before /usr-merge; try the path, its real path, and the /usr-less form.
    candidates = [path, os.path.realpath(path)]
    candidates += [c.removeprefix("/usr") for c in candidates if c.startswith("/usr/")]
    for cand in candidates:
        try:
            p = subprocess.run(["dpkg-query", "-S", cand], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if p.returncode == 0 and ":" in p.stdout:
            pkg = p.stdout.split(":", 1)[0].split(",")[0].strip()
            return pkg, package_version(pkg) or "?"
    return None


def package_version(pkg: str) -> str | None:
    try:
        p = subprocess.run(["dpkg-query", "-W", "-f", "${Status} ${Version}", pkg], capture_output=True,
                           text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    parts = p.stdout.split()
    return parts[-1] if p.returncode == 0 and "installed" in parts[:3] and len(parts) == 4 else None


#: Packages the lab uses that ship no executable of their own (a Python module).
MODULE_PACKAGES = ("python3-aiosmtpd",)


def versions(tools: list[str]) -> dict[str, str]:
    """tool -> "package version" (or "not from a Debian package"), plus module-only packages."""
    out = {}
    for pkg in MODULE_PACKAGES:
        v = package_version(pkg)
        if v:
            out[pkg] = f"{pkg} {v}"
    for t in sorted(set(tools)):
        pv = package_of(t)
        if pv:
            out[t] = f"{pv[0]} {pv[1]}"
        elif find_tool(t):
            out[t] = "not from a Debian package"
    return out
