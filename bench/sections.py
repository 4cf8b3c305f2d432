"""bench/RESULTS.md holds compare.py's tables and, after them, a section per other benchmark
script (exec.py, ...). Each such section sits between two HTML comments naming its script, so
each script rewrites its own section and compare.py, which rewrites the whole file, keeps the
others as they were."""

import os
import re


def _pattern(name=r"[\w.-]+"):
    return re.compile(rf"<!-- begin {name} -->\n.*?<!-- end {name} -->\n", re.S)


def kept(path):
    """Every script's section in the file at path, in order, as one string ("" if none)."""
    if not os.path.exists(path):
        return ""
    with open(path) as f:
        return "".join(m.group(0) for m in _pattern().finditer(f.read()))


def write(path, name, body):
    """Puts body into the section of script `name`, replacing the old one or appending it."""
    section = f"<!-- begin {name} -->\n{body.rstrip()}\n<!-- end {name} -->\n"
    text = ""
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
    pattern = _pattern(re.escape(name))
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section if text else section
    with open(path, "w") as f:
        f.write(text)
