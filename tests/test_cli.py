import subprocess
import sys

import pytest

from kubenode.cli import build_parser, main


def test_every_contract_command_parses() -> None:
    parser = build_parser()
    for argv in (["up"], ["server"], ["runtime"], ["agent"], ["kubelet"], ["proxy"],
                 ["image", "ls"]):
        assert parser.parse_args(argv).entry


def test_unknown_flag_is_rejected() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["server", "--no-such-flag"])
    assert exc.value.code == 2


def test_runs_as_module() -> None:
    out = subprocess.run([sys.executable, "-m", "kubenode", "--help"],
                         capture_output=True, text=True, check=True)
    assert "runtime" in out.stdout and "agent" in out.stdout
