"""tests/site/ needs the CI site stage's machine (root, a vpopmail user, a venv only root can read):
run it through `bash .ci/site-tests`, which sets VCLI_TEST_SITE=1; anywhere else, stop loudly."""

import os

import pytest

if os.environ.get("VCLI_TEST_SITE") != "1" or not os.environ.get("VCLI_TEST_SITE_TMP"):
    raise pytest.UsageError("tests/site/ runs only in the CI site stage: sudo bash .ci/site-tests")
