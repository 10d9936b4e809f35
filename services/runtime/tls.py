"""TLS at Envoy and mTLS between Envoy and the services (`HEADRACE_TLS=true`).

`headrace certs` (or `headrace up` with TLS on, when they are missing) writes a small
private CA and two certificates under `<home>/certs/`:

- `ca.pem` / `ca.key`: the CA. Clients verify Envoy's public certificate with
  `ca.pem`; every internal hop trusts only certificates it signed.
- `public.pem` / `public.key`: Envoy's public listener (server authentication).
- `internal.pem` / `internal.key`: the internal hops, used both ways (server and
  client authentication): each service's gRPC server presents it and requires a client
  certificate signed by the CA; Envoy presents it to the services (requests and
  health checks) and requires it from callers of its internal listener, where the
  services present it in turn.

Keys are EC P-256 and written with mode 0600. A second run keeps what exists unless
`force` is set (rotation: rerun with force, then restart the suite).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class CertPaths:
    """Where the CA and the two certificates live."""

    root: Path

    @property
    def ca(self) -> Path:
        return self.root / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def public(self) -> Path:
        return self.root / "public.pem"

    @property
    def public_key(self) -> Path:
        return self.root / "public.key"

    @property
    def internal(self) -> Path:
        return self.root / "internal.pem"

    @property
    def internal_key(self) -> Path:
        return self.root / "internal.key"

    def complete(self) -> bool:
        return (
            all(
                p.is_file()
                for p in (self.ca, self.ca_key, self.public, self.public_key, self.internal)
            )
            and self.internal_key.is_file()
        )


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """A CA signs certificates; a leaf signs handshakes (ECDHE with an EC key)."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not ca,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _issue(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    names: list[str],
    usages: list[x509.ObjectIdentifier],
    days: int,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(_san(names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def make_certs(
    paths: CertPaths, sans: list[str] | None = None, *, force: bool = False, days: int = 365
) -> list[Path]:
    """Write the CA and both certificates (unless all exist and not force); the written paths."""
    if paths.complete() and not force:
        return []
    paths.root.mkdir(parents=True, exist_ok=True)
    os.chmod(paths.root, 0o700)
    names = [*LOOPBACK_NAMES, *(sans or [])]
    ca_key = _key()
    now = datetime.datetime.now(datetime.UTC)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Headrace local CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days * 5))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    public, public_key = _issue(
        ca_cert, ca_key, "headrace-public", names, [ExtendedKeyUsageOID.SERVER_AUTH], days
    )
    internal, internal_key = _issue(
        ca_cert,
        ca_key,
        "headrace-internal",
        names,
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        days,
    )
    _write_key(paths.ca_key, ca_key)
    _write_key(paths.public_key, public_key)
    _write_key(paths.internal_key, internal_key)
    for path, cert in ((paths.ca, ca_cert), (paths.public, public), (paths.internal, internal)):
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return [
        paths.ca,
        paths.ca_key,
        paths.public,
        paths.public_key,
        paths.internal,
        paths.internal_key,
    ]


def server_credentials(paths: CertPaths) -> grpc.ServerCredentials:
    """A service's gRPC server: the internal certificate; callers must show one the CA signed."""
    return grpc.ssl_server_credentials(
        [(paths.internal_key.read_bytes(), paths.internal.read_bytes())],
        root_certificates=paths.ca.read_bytes(),
        require_client_auth=True,
    )


def channel_credentials(paths: CertPaths) -> grpc.ChannelCredentials:
    """A service calling Envoy's internal listener (or another service) over mTLS."""
    return grpc.ssl_channel_credentials(
        root_certificates=paths.ca.read_bytes(),
        private_key=paths.internal_key.read_bytes(),
        certificate_chain=paths.internal.read_bytes(),
    )
