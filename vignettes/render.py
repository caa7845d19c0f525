"""Execute a percent-format Python tutorial and write it as markdown with its outputs.

Usage: ``python vignettes/render.py vignettes/quickstart.py`` writes ``vignettes/quickstart.md``.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path


def cells(source: str):
    """Split a percent-format script into ("markdown" | "code", text) cells."""
    kind, lines = None, []
    for line in source.splitlines():
        if line.startswith("# %%"):
            if kind is not None:
                yield kind, "\n".join(lines).strip("\n")
            kind, lines = ("markdown" if "[markdown]" in line else "code"), []
        else:
            lines.append(line[2:] if kind == "markdown" and line.startswith("# ") else
                         "" if kind == "markdown" and line == "#" else line)
    if kind is not None:
        yield kind, "\n".join(lines).strip("\n")


def render(script: Path) -> str:
    """Run every code cell of ``script`` in one namespace; return markdown with outputs."""
    namespace: dict = {"__name__": "__main__"}
    parts = []
    for kind, text in cells(script.read_text()):
        if kind == "markdown":
            parts.append(text)
            continue
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            exec(compile(text, str(script), "exec"), namespace)
        parts.append(f"```python\n{text}\n```")
        if buffer.getvalue().strip():
            parts.append(f"```text\n{buffer.getvalue().rstrip()}\n```")
    return "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    path = Path(sys.argv[1]).resolve()
    os.chdir(path.parent)
    path.with_suffix(".md").write_text(render(path))
