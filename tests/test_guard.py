import subprocess

import pytest

from tests.fixtures.guard import GUARD_PREFIX, guard_ruleset, remove_stale_guards


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


@pytest.mark.root
def test_guards_of_dead_sessions_are_removed(nft_guard: str | None) -> None:
    dead = 2**22 + 7  # above pid_max's default ceiling: no such process
    stale = f"{GUARD_PREFIX}{dead}"
    subprocess.run(["nft", "add", "table", "inet", stale], check=True)
    try:
        remove_stale_guards()
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True,
                                check=True).stdout
        assert stale not in tables
        assert nft_guard in tables
    finally:
        subprocess.run(["nft", "delete", "table", "inet", stale], check=False,
                       capture_output=True)
