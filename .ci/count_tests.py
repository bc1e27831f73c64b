#!/usr/bin/env python3
"""Counts test cases in a Meson test log (meson-logs/testlog.json): a Catch2 executable
contributes the test cases it reports; any other Meson test counts as one case. A test
executable that failed without reporting failed cases (a crash, a sanitizer report at exit)
adds one failure. Prints 'N passed, N failed' as its last line."""
import json
import re
import sys

passed = failed = 0
with open(sys.argv[1], encoding="utf-8") as log:
    for line in log:
        if not line.strip():
            continue
        t = json.loads(line)
        out = t.get("stdout") or ""
        ok = t.get("result") in ("OK", "EXPECTEDFAIL", "SKIP")
        all_ok = re.search(r"All tests passed \(\d+ assertions? in (\d+) test cases?\)", out)
        mixed = re.search(r"test cases:\s*(\d+)\s*\|\s*(\d+) passed\s*\|\s*(\d+) failed", out)
        case_fail = 0
        if all_ok:
            passed += int(all_ok.group(1))
        elif mixed:
            passed += int(mixed.group(2))
            case_fail = int(mixed.group(3))
        elif ok:
            passed += 1
        failed += case_fail
        if not ok and case_fail == 0:
            failed += 1
print(f"{passed} passed, {failed} failed")
