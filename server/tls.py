"""HTTPS for the API, and the client side of it: one place that turns certificate files into `ssl.SSLContext`s.

The server (``--tls-cert``, ``--tls-key``) serves HTTPS only; with ``--tls-ca`` it also asks every client for a
certificate and refuses the TLS handshake unless that certificate is signed by the CA (mutual TLS). Clients (the CLI's
``--ca``/``--cert``/``--key``, `server.client.RumorClient`, `server.cluster_client.Client`) verify the node against
``ca`` (the system's trust store when it is left out) and present ``cert``/``key`` when given.

Files that cannot be used (missing, not PEM, a key that does not match its certificate) are a `TLSConfigError` that
names the option and the file, raised before the node binds anything: one line for the operator, no traceback.
TLS 1.2 is the floor on both sides (the `ssl` module's defaults otherwise: no compression, strong ciphers).
"""

from __future__ import annotations

import ssl
from pathlib import Path

from rumor.server.errors import ConfigError

StrPath = str | Path


class TLSConfigError(ConfigError):
    """A certificate, key or CA file that cannot be loaded; the message names the option and the file."""

    code = "bad_tls_config"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, ssl.SSLError):
        return exc.reason.lower().replace("_", " ") if exc.reason else str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def _load_chain(context: ssl.SSLContext, cert: StrPath, key: StrPath, options: tuple[str, str]) -> None:
    try:
        context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    except (OSError, ssl.SSLError) as exc:
        raise TLSConfigError(f"cannot use {options[0]} {cert} with {options[1]} {key}: {_reason(exc)} (both must be "
                             "PEM files, the key unencrypted and matching the certificate)") from None


def _load_ca(context: ssl.SSLContext, ca: StrPath, option: str) -> None:
    try:
        context.load_verify_locations(cafile=str(ca))
    except (OSError, ssl.SSLError) as exc:
        raise TLSConfigError(f"cannot use {option} {ca}: {_reason(exc)} (a PEM file of CA certificates)") from None


def server_context(cert: StrPath, key: StrPath, ca: StrPath | None = None) -> ssl.SSLContext:
    """The API's TLS context; with ``ca``, a client must present a certificate the CA signed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(context, cert, key, ("--tls-cert", "--tls-key"))
    if ca is not None:
        _load_ca(context, ca, "--tls-ca")
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(ca: StrPath | None = None, cert: StrPath | None = None,
                   key: StrPath | None = None) -> ssl.SSLContext:
    """A client's context: verifies the node's certificate and host name against ``ca`` (else the system's CAs),
    and presents ``cert``/``key`` (both, or neither) to a node that asks."""
    if (cert is None) != (key is None):
        raise TLSConfigError("give --cert and --key together (a client certificate and its key), or neither")
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca is not None:
        _load_ca(context, ca, "--ca")
    if cert is not None and key is not None:
        _load_chain(context, cert, key, ("--cert", "--key"))
    return context


def check_server_options(cert: Path | None, key: Path | None, ca: Path | None) -> None:
    """The combinations that make sense: cert and key together; a CA only with them (it checks clients of HTTPS)."""
    if (cert is None) != (key is None):
        raise TLSConfigError("give tls_cert and tls_key together (the API's certificate and its private key)")
    if ca is not None and cert is None:
        raise TLSConfigError("tls_ca checks client certificates of HTTPS: give tls_cert and tls_key too")


__all__ = ["TLSConfigError", "check_server_options", "client_context", "server_context"]
