# SPDX-License-Identifier: Apache-2.0
"""The printed waterfall of `python -m fasttrace view` (and of the demo) read back into
rows, so tests compare it with the spans that were written."""
import re

DURATION = re.compile(r"^\s*(?P<value>\d+(?:\.\d+)?) (?P<unit>ns|µs|us|ms|s)\b")
DECISION = re.compile(r"^\s+\[(?P<decision>[^\]]+)\]")
UNITS = {"ns": 1, "µs": 1e3, "us": 1e3, "ms": 1e6, "s": 1e9}


# -- parsing the terminal output ------------------------------------------------------------

def parse_waterfall(text, unicode=True):
    """The traces of a printed waterfall: [{"trace_id", "header", "columns", "rows"}].

    Each row: service, label (as printed), depth, op (without markers), follows (⇢/>>),
    first/last (bar columns, last exclusive), glyph, duration_ns, error (bool), detail
    (the error line under it, or None), decision (the ``[error]`` after the duration: the
    span's sampling.decision tag, or None)."""
    bar_glyphs = "█░" if unicode else "#="
    follows_mark = "⇢ " if unicode else ">> "
    error_mark = "✗" if unicode else "!"
    traces = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^trace ([0-9a-f]{32}) ", lines[i])
        if not m:
            i += 1
            continue
        header, labels, rule = lines[i], lines[i + 1], lines[i + 2]
        op_col = labels.index("operation")
        bar_at = len(rule) - len(rule.lstrip(" "))
        columns = len(rule.rstrip()) - bar_at - len("> time") - 1
        trace = {"trace_id": m.group(1), "header": header, "columns": columns,
                 "bar_at": bar_at, "rule": rule, "labels": labels, "rows": []}
        i += 3
        while i < len(lines) and lines[i].strip():
            line = lines[i]
            if line.startswith(" "):                 # the error line under a row
                assert trace["rows"], line
                trace["rows"][-1]["detail"] = line.strip()
                i += 1
                continue
            label = line[op_col:bar_at].rstrip()
            bar = line[bar_at:bar_at + columns]
            cells = [k for k, ch in enumerate(bar) if ch in bar_glyphs]
            assert cells, line
            assert cells == list(range(cells[0], cells[-1] + 1)), f"bar with a hole: {line!r}"
            assert line[bar_at - 2:bar_at] == "  ", line
            rest = line[bar_at + columns:]
            d = DURATION.match(rest)
            assert d, line
            k = DECISION.match(rest[d.end():])
            op = label.lstrip(" ")
            follows = op.startswith(follows_mark)
            trace["rows"].append({
                "service": line[:op_col].strip(),
                "label": label,
                "depth": (len(label) - len(op)) // 2,
                "op": op[len(follows_mark):] if follows else op,
                "follows": follows,
                "first": cells[0],
                "last": cells[-1] + 1,
                "glyph": bar[cells[0]],
                "duration_ns": float(d.group("value")) * UNITS[d.group("unit")],
                "error": f"{error_mark} error" in rest,
                "detail": None,
                "decision": k.group("decision") if k else None,
            })
            i += 1
        traces.append(trace)
    return traces
