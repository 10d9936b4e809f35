"""`headrace certs`: a private CA and the two certificates HEADRACE_TLS uses."""

from __future__ import annotations

import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from headrace.services.runtime.tls import CertPaths, make_certs


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def names(cert: x509.Certificate) -> set[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(n) for n in san.get_values_for_type(x509.DNSName)} | {
        str(n) for n in san.get_values_for_type(x509.IPAddress)
    }


def usages(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_both_certificates_chain_to_the_ca_and_name_loopback_and_extra_names(
    tmp_path: Path,
) -> None:
    paths = CertPaths(tmp_path / "certs")
    written = make_certs(paths, ["gateway.example", "10.0.0.7"])
    assert len(written) == 6 and paths.complete()
    ca = load(paths.ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for cert in (load(paths.public), load(paths.internal)):
        cert.verify_directly_issued_by(ca)
        assert names(cert) >= {"localhost", "127.0.0.1", "::1", "gateway.example", "10.0.0.7"}
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    # The public certificate only serves; the internal one serves and is a client.
    assert usages(load(paths.public)) == {ExtendedKeyUsageOID.SERVER_AUTH}
    assert usages(load(paths.internal)) == {
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    }


def test_private_keys_are_readable_by_the_owner_only(tmp_path: Path) -> None:
    paths = CertPaths(tmp_path / "certs")
    make_certs(paths)
    for key in (paths.ca_key, paths.public_key, paths.internal_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(paths.root.stat().st_mode) == 0o700


def test_a_second_run_keeps_the_certificates_and_force_replaces_them(tmp_path: Path) -> None:
    paths = CertPaths(tmp_path / "certs")
    make_certs(paths)
    first = paths.internal.read_bytes(), paths.ca.read_bytes()
    assert make_certs(paths) == []
    assert (paths.internal.read_bytes(), paths.ca.read_bytes()) == first
    assert make_certs(paths, force=True)
    assert paths.internal.read_bytes() != first[0] and paths.ca.read_bytes() != first[1]
