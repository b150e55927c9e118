#!/usr/bin/env python3
"""Summarise an Autobahn TestSuite report and fail unless every case passed.

usage: report.py INDEX_JSON ROLE AGENT

INDEX_JSON is wstest's outdir/index.json: {agent: {case_id: {"behavior", "behaviorClose",
"duration", "reportfile", ...}}}. A case passes when both behavior and behaviorClose are OK or
INFORMATIONAL; anything else (NON-STRICT, UNIMPLEMENTED, FAILED, WRONG CODE, ...) is a failure.

The last line printed is always `autobahn-<ROLE>: N passed, M failed`. Exit status is 1 when
M > 0 or no case was found, 2 on usage errors.
"""

import json
import os
import re
import sys
from collections import Counter

PASSING = {"OK", "INFORMATIONAL"}


def case_key(case_id):
    return tuple(int(p) if p.isdigit() else 0 for p in case_id.split("."))


def first_line(value, limit=160):
    if not isinstance(value, str):
        return ""
    value = re.sub(r"<[^>]+>", "", value)
    line = value.strip().splitlines()[0].strip() if value.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def case_details(report_dir, entry):
    """Description and result of one case from its per-case json report, if readable."""
    name = entry.get("reportfile")
    if not name:
        return None
    try:
        with open(os.path.join(report_dir, name), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def main(argv):
    if len(argv) != 4 or argv[2] not in ("server", "client"):
        print("usage: report.py INDEX_JSON server|client AGENT", file=sys.stderr)
        return 2
    index_path, role, agent = argv[1:]
    summary = "autobahn-%s: %d passed, %d failed"

    try:
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
    except FileNotFoundError:
        print("error: %s not found: wstest wrote no report (see wstest.log next to it)" % index_path,
              file=sys.stderr)
        print(summary % (role, 0, 0))
        return 1
    except (OSError, ValueError) as e:
        print("error: cannot read %s: %s" % (index_path, e), file=sys.stderr)
        print(summary % (role, 0, 0))
        return 1

    cases = index.get(agent) if isinstance(index, dict) else None
    if not cases:
        others = ", ".join(sorted(index)) if isinstance(index, dict) else ""
        print("error: no cases for agent %r in %s%s" % (
            agent, index_path, " (agents present: %s)" % others if others else ""), file=sys.stderr)
        print(summary % (role, 0, 0))
        return 1

    report_dir = os.path.dirname(os.path.abspath(index_path))
    behaviors = Counter()
    close_behaviors = Counter()
    failed = []
    for case_id in sorted(cases, key=case_key):
        entry = cases[case_id] or {}
        behavior = entry.get("behavior", "MISSING")
        close = entry.get("behaviorClose", "MISSING")
        behaviors[behavior] += 1
        close_behaviors[close] += 1
        if behavior not in PASSING or close not in PASSING:
            failed.append((case_id, entry, behavior, close))

    def counts(counter):
        return ", ".join("%s %d" % kv for kv in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))

    print("autobahn %s report: %s (%d cases, agent %s)" % (role, index_path, len(cases), agent))
    print("  behavior:      " + counts(behaviors))
    print("  behaviorClose: " + counts(close_behaviors))

    if failed:
        print("failing cases:")
        for case_id, entry, behavior, close in failed:
            duration = entry.get("duration")
            print("  %-10s behavior=%s behaviorClose=%s%s" % (
                case_id, behavior, close, " (%s ms)" % duration if duration is not None else ""))
            details = case_details(report_dir, entry)
            if details:
                for label, key in (("case", "description"), ("result", "result"),
                                   ("close", "resultClose")):
                    text = first_line(details.get(key))
                    if text and not (key == "resultClose" and close in PASSING):
                        print("      %-7s %s" % (label + ":", text))
        print("details: %s" % os.path.join(report_dir, "index.html"))

    passed = len(cases) - len(failed)
    print(summary % (role, passed, len(failed)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
