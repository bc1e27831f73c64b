#!/usr/bin/env python3
"""Compile-must-fail check: builds one ninja target that must NOT compile, and passes only when
the compiler rejects it with the expected sentence (so it cannot pass for the wrong reason).
usage: compile_fail.py BUILD_ROOT TARGET 'expected text'"""
import subprocess
import sys

root, target, expected = sys.argv[1:4]
r = subprocess.run(["ninja", "-C", root, target], capture_output=True, text=True)
out = r.stdout + r.stderr
if r.returncode == 0:
    print(f"FAIL: {target} compiled, but it must not")
    sys.exit(1)
if expected not in out:
    print(f"FAIL: {target} did not compile, but without the expected message {expected!r}:")
    print(out[-4000:])
    sys.exit(1)
print(f"ok: {target} is rejected with: {expected!r}")
