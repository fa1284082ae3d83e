import subprocess

import pytest

from tests.fixtures.guard import guard_ruleset


def test_guard_ruleset_names_uplink_and_cidrs() -> None:
    rules = guard_ruleset("t", "eth9")
    assert 'oifname "eth9" drop' in rules
    assert "10.43.0.0/16" in rules and "10.42.0.0/16" in rules


@pytest.mark.root
def test_guard_is_installed(nft_guard: str | None) -> None:
    assert nft_guard is not None
    out = subprocess.run(["nft", "list", "table", "inet", nft_guard],
                         capture_output=True, text=True, check=True).stdout
    assert "hook forward" in out and "hook postrouting" in out
