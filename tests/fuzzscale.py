"""How many examples a property test tries: CI's number, times VCLI_FUZZ_SCALE for the full run."""

import os


def examples(n: int) -> int:
    return n * max(1, int(os.environ.get("VCLI_FUZZ_SCALE", "1") or 1))
