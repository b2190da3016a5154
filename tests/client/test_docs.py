"""Every Python example in docs/client.md runs as written against a real server."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.client.conftest import Served
from tests.integration.conftest import clean_env
from tests.support import ROOT, WAIT_SECONDS

#: The fenced Python blocks of the guide, in order.
EXAMPLES = re.findall(r"```python\n(.*?)```", (ROOT / "docs/client.md").read_text(), re.S)


def test_the_guide_has_its_examples() -> None:
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("number", range(len(EXAMPLES)))
def test_the_guides_example_runs(served: Served, number: int) -> None:
    env = clean_env(BULKAPI_API_URL=served.base_url, BULKAPI_API_KEY=served.new_key())
    out = subprocess.run(
        [sys.executable, "-c", EXAMPLES[number]],
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout
