"""Lines and source lines of files at a git commit (BENCHMARKS.md, section 13).

    python bench/source_lines.py 52e3666 mia_ray/training.py mia_ray/pipeline.py ...

A source line holds a code token: blank lines, comments and docstrings (a string that
is a statement of its own) are not counted. A file absent at the commit is skipped.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tokenize

SKIPPED = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
           tokenize.DEDENT, tokenize.ENDMARKER}
STATEMENT_END = {tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}


def source_lines(text: str) -> int:
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(text).readline)
              if t.type not in (tokenize.NL, tokenize.COMMENT)]
    lines: set[int] = set()
    for i, token in enumerate(tokens):
        if token.type in SKIPPED:
            continue
        before = tokens[i - 1].type if i else tokenize.NEWLINE
        after = tokens[i + 1].type if i + 1 < len(tokens) else tokenize.ENDMARKER
        if (token.type == tokenize.STRING and before in STATEMENT_END
                and after in (tokenize.NEWLINE, tokenize.ENDMARKER)):
            continue  # a docstring
        lines.update(range(token.start[0], token.end[0] + 1))
    return len(lines)


def main(argv: list[str]) -> None:
    commit, files = argv[0], argv[1:]
    total_lines = total_source = 0
    for path in files:
        shown = subprocess.run(["git", "show", f"{commit}:{path}"], capture_output=True,
                               text=True)
        if shown.returncode:
            continue
        lines, source = shown.stdout.count("\n"), source_lines(shown.stdout)
        total_lines, total_source = total_lines + lines, total_source + source
        print(f"{lines:6d} {source:6d}  {path}")
    print(f"{total_lines:6d} {total_source:6d}  total (lines, source lines)")


if __name__ == "__main__":
    main(sys.argv[1:])
