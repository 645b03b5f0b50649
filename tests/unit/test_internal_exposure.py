"""`wrangler serve --cluster` says so loudly when nodes would talk in the clear across a network
(and production refuses to start unless told `--insecure-internal`: `e2e/test_production.py`)."""
from __future__ import annotations

from pathlib import Path

from wrangler.cli import _parser as build_parser
from wrangler.serve import plaintext_between_nodes


def args(*argv: str):
    return build_parser().parse_args(["serve", *argv])


def test_cluster_nodes_on_a_network_address_without_tls_are_named(tmp_path: Path) -> None:
    for pem in ("c.pem", "k.pem", "ca.pem"):
        (tmp_path / pem).write_text("")
    tls = ["--internal-tls-cert", str(tmp_path / "c.pem"), "--internal-tls-key", str(tmp_path / "k.pem"),
           "--internal-tls-ca", str(tmp_path / "ca.pem")]
    assert "plain HTTP" in (plaintext_between_nodes(args("--cluster", "--ip", "0.0.0.0")) or "")
    assert "10.0.0.5" in (plaintext_between_nodes(args("--cluster", "--ip", "10.0.0.5")) or "")
    assert plaintext_between_nodes(args("--cluster", "--ip", "0.0.0.0", *tls)) is None
    assert plaintext_between_nodes(args("--cluster", "--ip", "0.0.0.0", "--internal-ip", "127.0.0.1")) is None
    assert plaintext_between_nodes(args("--cluster")) is None  # loopback: one host
    assert plaintext_between_nodes(args("--ip", "0.0.0.0")) is None  # not a cluster: internal stays on loopback
