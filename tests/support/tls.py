"""Certificates for TLS tests, made with `cryptography`: a self-signed certificate for
localhost/127.0.0.1 (make_cert), and test CAs with leaf certificates for any set of names, for
servers and for clients (make_ca, CA.issue)."""
from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["make_cert", "make_ca", "CA"]


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    out: list[x509.GeneralName] = []
    for n in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return x509.SubjectAlternativeName(out)


def _write(directory: Path, stem: str, cert: x509.Certificate, key) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def make_cert(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(_san(["localhost", "127.0.0.1"]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return _write(directory, "server", cert, key)


@dataclass
class CA:
    """A test certificate authority: `cert` is its PEM file (what sslrootcert names)."""
    directory: Path
    cert: Path
    _cert: x509.Certificate
    _key: ec.EllipticCurvePrivateKey

    def issue(self, stem: str, common_name: str, names: list[str] = (), *,
              client: bool = False) -> tuple[Path, Path]:
        """A leaf certificate and its 0600 key, named `stem`.crt/.key in the CA's directory;
        server certificates carry `names` as subjectAltNames, client ones their CN (the user)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        b = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
             .issuer_name(self._cert.subject).public_key(key.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH if client
                                                   else ExtendedKeyUsageOID.SERVER_AUTH]),
                            critical=False))
        if names:
            b = b.add_extension(_san(list(names)), critical=False)
        return _write(self.directory, stem, b.sign(self._key, hashes.SHA256()), key)


def make_ca(directory: Path, name: str = "pgkeep test CA") -> CA:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, _ = _write(directory, "ca", cert, key)
    return CA(directory, cert_path, cert, key)


# ---- an intercepting relay (a man in the middle) -------------------------------------------------

SSL_REQUEST = b"\x00\x00\x00\x08\x04\xd2\x16\x2f"


class InterceptingRelay:
    """A TCP relay that terminates the PostgreSQL TLS upgrade with its own certificate (switchable
    at any time with `present`) and re-originates in plaintext to 127.0.0.1:target_port, reading
    everything: what a man in the middle does. Per certificate presented (its .crt path),
    `decrypted` counts the bytes it read from clients after the handshake, `relayed` the
    connections it carried to the target and `refused` the handshakes a client broke off."""

    def __init__(self, target_port: int, cert: tuple[Path, Path]) -> None:
        import asyncio
        import threading
        self.target_port = target_port
        from collections import Counter
        self.decrypted: Counter = Counter()
        self.relayed: Counter = Counter()
        self.refused: Counter = Counter()
        self.present(cert)
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self._server = asyncio.run_coroutine_threadsafe(self._listen(), self.loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]

    def present(self, cert: tuple[Path, Path] | None) -> None:
        """Answer the next TLS upgrades with this certificate and key; None: answer 'N' (no TLS)
        and relay the plaintext that follows, a downgrade."""
        import ssl
        if cert is None:
            self._ctx, self._name = None, "downgrade"
            return
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
        self._ctx, self._name = ctx, str(cert[0])

    async def _listen(self):
        import asyncio
        return await asyncio.start_server(self._handle, "127.0.0.1", 0)

    async def _handle(self, reader, writer) -> None:
        import asyncio
        try:
            head = await reader.readexactly(8)
            name = "plaintext"
            if head == SSL_REQUEST and self._ctx is None:
                writer.write(b"N")
                name, head = self._name, b""
            elif head == SSL_REQUEST:
                writer.write(b"S")
                await writer.drain()
                ctx, name = self._ctx, self._name
                try:
                    await writer.start_tls(ctx)
                except Exception:  # noqa: BLE001 - any way the client breaks off the handshake
                    self.refused[name] += 1
                    writer.close()
                    return
                head = b""
            ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
            self.relayed[name] += 1
            uw.write(head)
            await asyncio.gather(self._pipe(reader, uw, name), self._pipe(ur, writer, None))
        except (OSError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _pipe(self, reader, writer, client_cert: str | None) -> None:
        try:
            while data := await reader.read(65536):
                if client_cert is not None:
                    self.decrypted[client_cert] += len(data)
                writer.write(data)
                await writer.drain()
        except (OSError, ConnectionError):
            pass
        finally:
            try:
                writer.close()
            except Exception:  # noqa: BLE001
                pass

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self._server.close)
