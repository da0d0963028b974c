"""
Running the TypeScript compiler from tests: pages compile, or fail on exactly the lines meant.

``make ts-deps`` (part of ``make test``) installs the compiler pinned in
``tests/typescript/package-lock.json`` into ``tests/typescript/node_modules``.
Every page is compiled with ``tests/typescript/tsconfig.json``: ``--strict``, a
browser's libraries, and ``/nucleus/stream.js`` mapped to the shipped
``stream.d.ts``, as a page's own tsconfig would map it.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TS_DIR = ROOT / "tests" / "typescript"
TSC = TS_DIR / "node_modules" / ".bin" / "tsc"

#: A directive marking the next line as a mistake the compiler must report.
EXPECT_ERROR = re.compile(r"^\s*// @ts-expect-error\b.*$")


@dataclass(frozen=True)
class Compiled:
    returncode: int
    output: str

    def error_lines(self, file: Path) -> set[int]:
        """The lines of ``file`` that have an error (``file.ts(12,3): error TS2345: ...``)."""
        found = re.findall(rf"^(?:.*/)?{re.escape(file.name)}\((\d+),\d+\): error TS\d+",
                           self.output, re.MULTILINE)
        return {int(line) for line in found}


def compile_ts(where: Path, *files: Path) -> Compiled:
    """Compile ``files`` with the shared settings (no output), writing the config in ``where``."""
    assert TSC.exists(), "tsc is missing: `make test` installs it (`make ts-deps`: npm ci)"
    config = where / "tsconfig.json"
    config.write_text(json.dumps({
        "extends": str(TS_DIR / "tsconfig.json"),
        "files": [str(file) for file in files],
    }))
    done = subprocess.run(
        [str(TSC), "-p", str(config), "--pretty", "false"],
        cwd=where, capture_output=True, text=True, timeout=120, check=False,
    )
    return Compiled(done.returncode, done.stdout + done.stderr)


def without_expect_errors(source: Path, into: Path) -> tuple[Path, set[int]]:
    """
    Copy ``source`` into ``into`` with its ``@ts-expect-error`` directives blanked;
    return the copy and the lines the directives covered (line numbers kept).
    """
    lines = source.read_text().splitlines()
    marked = {number + 2 for number, line in enumerate(lines) if EXPECT_ERROR.match(line)}
    bare = ["" if EXPECT_ERROR.match(line) else line for line in lines]
    copy = into / source.name
    copy.write_text("\n".join(bare) + "\n")
    return copy, marked
