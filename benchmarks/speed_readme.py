"""Fill the README's generated Speed tables from benchmarks/results/speed/ (run after
benchmarks/run_speed.sh): every block between ``<!-- speed:NAME -->`` and ``<!-- /speed -->`` is
replaced by the tables of ``NAME/speed.md`` (``profile-1000000``: its stage table).

    .venv/bin/python benchmarks/speed_readme.py
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "speed"
BLOCK = re.compile(r"(<!-- speed:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /speed -->)", re.S)


def body(name: str) -> str:
    if name.startswith("profile-"):
        lines = (RESULTS / name / "profile.md").read_text().splitlines()
        return "\n".join(line for line in lines if line.startswith("|")) + "\n"
    lines = (RESULTS / name / "speed.md").read_text().strip().splitlines()
    return "\n".join(lines[1:]).strip() + "\n"  # without its "### N items" heading


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    names = [m.group("name") for m in BLOCK.finditer(text)]
    text = BLOCK.sub(lambda m: m.group(1) + "\n" + body(m.group("name")) + "\n" + m.group(4), text)
    readme.write_text(text)
    print(f"filled {', '.join(names)}")


if __name__ == "__main__":
    main()
