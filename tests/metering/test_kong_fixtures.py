import json
from pathlib import Path

import pytest

from tests.conftest import KONG_FIXTURES_FILE

SHARED_COPY = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "kong_events.json"


def test_repo_copy_of_the_kong_fixtures_matches_the_shared_contract():
    if not SHARED_COPY.exists():
        pytest.skip("../shared is not checked out beside the repo here")
    assert json.loads(KONG_FIXTURES_FILE.read_text()) == json.loads(SHARED_COPY.read_text())
