"""Write constraints.txt: the exact installed versions of what digits needs, and what that needs in turn.

    .venv/bin/python scripts/freeze_constraints.py

Starts from pyproject.toml's dependencies and its `test` and `lint` extras, follows every package's own
requirements (with their environment markers) through the installed metadata, and pins each package found
at the version installed in this environment. Unlike `pip freeze`, it leaves out whatever else the
environment holds. Build tools (setuptools, wheel, pip) are left out: pinning them would also pin the
isolated build environment that `pip install -e .` creates.
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

REPOSITORY = Path(__file__).resolve().parents[1]
EXTRAS = ("test", "lint")
BUILD_TOOLS = {"setuptools", "wheel", "pip"}
HEADER = """\
# The exact versions digits was last tested and measured with (Python {python}, {platform}): its dependencies,
# the test and lint extras, and everything they pull in. Use it to reproduce the figures in the docs:
#     .venv/bin/pip install -c constraints.txt -e '.[test]'
# Regenerate after upgrading the environment: .venv/bin/python scripts/freeze_constraints.py
# uvicorn has an upper bound in pyproject.toml: digits/serving/protocol.py subclasses its internal HTTP protocol class.
"""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_closure(requirements: list[str]) -> dict[str, str]:
    """Installed version of every package reachable from `requirements`, by canonical name."""
    environment = default_environment()
    versions: dict[str, str] = {}
    extras_seen: dict[str, set[str]] = {}
    pending = [(Requirement(text), "") for text in requirements]
    while pending:
        requirement, extra = pending.pop()
        if requirement.marker and not requirement.marker.evaluate({**environment, "extra": extra}):
            continue
        name = canonical(requirement.name)
        try:
            distribution = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            continue  # An optional dependency this environment does not have.
        new_extras = set(requirement.extras) - extras_seen.get(name, set())
        if name in versions and not new_extras:
            continue
        versions[name] = distribution.version
        extras_seen.setdefault(name, set()).update(new_extras)
        for text in distribution.requires or []:
            for wanted_extra in sorted(extras_seen[name]) or [""]:
                pending.append((Requirement(text), wanted_extra))
    return versions


def main() -> int:
    project = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    requirements = project["dependencies"] + [text for extra in EXTRAS for text in extras[extra]]
    versions = pinned_closure(requirements)
    # The test extra asks for digits' own extras (digits[sweep,export]): follow them, but never pin digits itself.
    left_out = BUILD_TOOLS | {canonical(project["name"])}
    lines = [f"{name}=={versions[name]}" for name in sorted(versions) if name not in left_out]
    header = HEADER.format(python=".".join(map(str, sys.version_info[:2])), platform=sys.platform)
    (REPOSITORY / "constraints.txt").write_text(header + "\n".join(lines) + "\n")
    print(f"constraints.txt: {len(lines)} packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
