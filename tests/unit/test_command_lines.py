"""The run's command lines (``fx_ef.command_lines``) read back by the steps' own parsers: what the
Job and ``fxctl run`` write is what ``fx_ef.init`` and ``fx_ef.executor`` understand."""

from __future__ import annotations

from pathlib import Path

import pytest

from fx_ef import contract, executor, init
from fx_ef.command_lines import executor_command, init_command


def test_the_pods_init_command_parses_back() -> None:
    argv = init_command(run_id="run-1", sealed=contract.POD_SEALED_BUNDLE,
                        out=contract.POD_SECRETS_DIR, broker="https://broker:8443",
                        token_file=contract.POD_TOKEN_FILE, ca_file=contract.POD_CA_FILE,
                        broker_wait=7.5)
    assert argv[:3] == ["python", "-m", "fx_ef.init"]
    args = init._parser().parse_args(argv[3:])
    assert args.run_id == "run-1"
    assert args.sealed == Path(contract.POD_SEALED_BUNDLE)
    assert args.out == Path(contract.POD_SECRETS_DIR)
    assert args.broker == "https://broker:8443" and args.key_stdin is False
    assert args.token_file == Path(contract.POD_TOKEN_FILE)
    assert args.ca_file == Path(contract.POD_CA_FILE)
    assert args.broker_wait == 7.5


def test_a_local_init_command_takes_its_key_on_stdin(tmp_path: Path) -> None:
    argv = init_command(run_id="run-2", sealed=tmp_path / "sealed", out=tmp_path / "out",
                        key_stdin=True, python="/usr/bin/python3")
    assert argv[0] == "/usr/bin/python3"
    args = init._parser().parse_args(argv[3:])
    assert (args.run_id, args.sealed, args.out, args.key_stdin) == (
        "run-2", tmp_path / "sealed", tmp_path / "out", True)


@pytest.mark.parametrize(("broker", "key_stdin"), [(None, False), ("https://b", True)])
def test_the_init_command_has_exactly_one_key_source(broker: str | None, key_stdin: bool) -> None:
    with pytest.raises(ValueError, match="one of them"):
        init_command(run_id="r", sealed="/s", out="/o", broker=broker, key_stdin=key_stdin)


def test_the_pods_executor_command_parses_back() -> None:
    argv = executor_command(sealed=contract.POD_SEALED_BUNDLE,
                            package_dir=contract.POD_PACKAGE_DIR,
                            result=contract.POD_RESULT_FILE, result_max_bytes=4096)
    assert argv[:3] == ["python", "-m", "fx_ef.executor"]
    args = executor.parse_args(argv[3:])
    assert args is not None
    assert args.sealed == contract.POD_SEALED_BUNDLE
    assert args.package_dir == contract.POD_PACKAGE_DIR
    assert args.result == contract.POD_RESULT_FILE
    assert args.result_max_bytes == 4096
    assert (args.no_mask, args.timeout) == (False, None)


@pytest.mark.parametrize(("bundle", "sealed"), [(None, None), ("/b", "/s")])
def test_the_executor_command_reads_one_bundle(bundle: str | None, sealed: str | None) -> None:
    with pytest.raises(ValueError, match="one of them"):
        executor_command(bundle=bundle, sealed=sealed, package_dir="/p")


def test_a_local_executor_command_parses_back(tmp_path: Path) -> None:
    argv = executor_command(bundle=tmp_path / "bundle.json", package_dir=tmp_path / "pkg",
                            result=tmp_path / "result.json", mask=False, timeout=2.5,
                            runner_pid=4242, python="/venv/bin/python")
    assert argv[:5] == ["/venv/bin/python", "-m", "fx_ef.local_executor", "--runner-pid",
                        "4242"]
    args = executor.parse_args(argv[5:])  # local_executor hands these to the executor
    assert args is not None
    assert args.bundle == str(tmp_path / "bundle.json")
    assert args.package_dir == str(tmp_path / "pkg")
    assert args.result == str(tmp_path / "result.json")
    assert (args.no_mask, args.timeout, args.result_max_bytes) == (True, 2.5, None)


def test_every_executor_flag_is_one_the_parser_knows() -> None:
    flags = [contract.FLAG_BUNDLE, contract.FLAG_PACKAGE_DIR, contract.FLAG_RESULT,
             contract.FLAG_RESULT_MAX_BYTES, contract.FLAG_NO_MASK, contract.FLAG_TIMEOUT,
             contract.FLAG_GRACE, contract.FLAG_KEEP_BUNDLE, contract.FLAG_SEALED,
             contract.FLAG_RUN_ID, contract.FLAG_BROKER, contract.FLAG_TOKEN_FILE,
             contract.FLAG_CA_FILE, contract.FLAG_KEY_STDIN]
    known = {f"--{option.rstrip('=')}" for option in executor._OPTIONS}
    assert set(flags) <= known
    assert known - set(flags) == {"--help"}
