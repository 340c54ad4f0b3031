"""HTTPS for the API with a CA this test makes: a served node (`rumor serve --tls-cert --tls-key --tls-ca`) refuses
a client without a certificate, serves one with a certificate the CA signed (the CLI, `RumorClient`, the cluster
`SyncClient`), and a client that does not trust the CA fails; unusable certificate files are one line at start."""

from __future__ import annotations

import datetime
import ipaddress
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rumor.server.client import RumorClient
from rumor.server.cluster_client import SyncClient
from rumor.server.tls import TLSConfigError, client_context

pytestmark = pytest.mark.integration
STARTUP_S = 30.0


@dataclass
class Issued:
    cert: Path
    key: Path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class ThrowawayCA:
    """A throwaway CA writing PEM files under ``folder``."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder = folder
        self.name = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(minutes=5))
                     .not_valid_after(now + datetime.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.path = folder / f"{name}.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, *, server: bool) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                   .issuer_name(self.cert.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                         else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        issued = Issued(self.folder / f"{name}.crt", self.folder / f"{name}.key")
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        issued.key.write_bytes(_key_pem(key))
        return issued


@dataclass
class Served:
    url: str
    ca: ThrowawayCA
    client: Issued
    stranger: Issued  # a client certificate from another CA


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("tls")
    ca, other = ThrowawayCA(folder, "rumor-test-ca"), ThrowawayCA(folder, "other-ca")
    node = ca.issue("node", server=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "rumor.server.cli", "serve", "--node-id", "tls1", "--in-memory", "--preset", "local",
         "--http-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0", "--tls-cert", str(node.cert),
         "--tls-key", str(node.key), "--tls-ca", str(ca.path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the node prints it once it serves (or exits, closing stdout)
        match = re.search(r"listening on (https://127\.0\.0\.1:\d+)", line)
        assert match, f"no https 'listening' line: {line!r} {proc.stderr.read() if proc.stderr else ''}"
        yield Served(match.group(1), ca, ca.issue("client", server=False), other.issue("stranger", server=False))
    finally:
        proc.terminate()
        proc.wait(timeout=STARTUP_S)


async def test_a_client_without_a_certificate_is_refused(served: Served) -> None:
    async with RumorClient(served.url, ca=served.ca.path) as client:
        with pytest.raises((aiohttp.ClientError, OSError)):
            await client.health()


async def test_a_client_with_a_certificate_from_another_ca_is_refused(served: Served) -> None:
    async with RumorClient(served.url, ca=served.ca.path, cert=served.stranger.cert,
                           key=served.stranger.key) as client:
        with pytest.raises((aiohttp.ClientError, OSError)):
            await client.health()


async def test_a_client_certificate_the_ca_signed_is_served(served: Served) -> None:
    async with RumorClient(served.url, ca=served.ca.path, cert=served.client.cert, key=served.client.key) as client:
        assert (await client.health())["ready"] is True
        await client.incr("visits", 2)
        assert (await client.get("visits"))["value"] == 2  # type: ignore[index]


async def test_a_client_that_does_not_trust_the_ca_fails_on_the_node_certificate(served: Served) -> None:
    async with RumorClient(served.url, cert=served.client.cert, key=served.client.key) as client:  # system CAs
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await client.health()


def test_the_cluster_client_takes_the_same_files(served: Served) -> None:
    with SyncClient([served.url], ca=served.ca.path, cert=served.client.cert, key=served.client.key) as rumor:
        rumor.put("greeting", "hello")
        item = rumor.get("greeting")
        assert item is not None and item.value == "hello"


def rumor_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rumor.server.cli", *args], capture_output=True, text=True,
                          timeout=STARTUP_S)


def test_the_cli_with_and_without_its_certificate(served: Served) -> None:
    done = rumor_cli("put", "cli-key", "42", "--node", served.url, "--ca", str(served.ca.path),
                     "--cert", str(served.client.cert), "--key", str(served.client.key))
    assert done.returncode == 0, done.stderr
    assert '"value": 42' in done.stdout
    refused = rumor_cli("get", "cli-key", "--node", served.url, "--ca", str(served.ca.path))
    assert refused.returncode == 1 and refused.stderr.startswith(f"rumor: cannot reach {served.url}")
    half = rumor_cli("get", "cli-key", "--node", served.url, "--cert", str(served.client.cert))
    assert half.returncode == 2 and "give --cert and --key together" in half.stderr


def test_unusable_certificate_files_are_one_line_at_start(tmp_path: Path) -> None:
    missing = rumor_cli("serve", "--in-memory", "--http-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0",
                        "--tls-cert", str(tmp_path / "nope.crt"), "--tls-key", str(tmp_path / "nope.key"))
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        f"rumor: cannot use --tls-cert {tmp_path / 'nope.crt'} with --tls-key {tmp_path / 'nope.key'}: no such file "
        "(both must be PEM files, the key unencrypted and matching the certificate)"]
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(TLSConfigError, match="cannot use --ca"):
        client_context(ca=garbage)
    lonely_ca = rumor_cli("serve", "--in-memory", "--tls-ca", str(garbage))
    assert lonely_ca.returncode == 2 and "give tls_cert and tls_key too" in lonely_ca.stderr
