"""Real mail servers on loopback for tests: aiosmtpd for SMTP, Dovecot for IMAP.

Each starter is a context manager that yields what a test needs (host, port, credentials, a
CA file when TLS is on) and a way to see what the server received or holds::

    with smtp_server() as smtp, imap_server() as imap:
        imap.deliver(message)                  # a message waiting in the INBOX
        ...                                    # run the tools against smtp.port / imap.port
        assert smtp.received[0].message["Subject"] == "Lunch"
        assert imap.flags() == [set()]         # still unread

``imap_server`` runs ``/usr/sbin/dovecot -F`` with its own configuration in a temporary
folder (nothing from ``/etc/dovecot``) and stops it by PID, then kills its process group.
``silent_server`` accepts connections and never answers (a hung server).
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import grp
import imaplib
import ipaddress
import logging
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Literal

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from mindbot.harness import free_port

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"

Security = Literal["none", "starttls", "ssl"]


# --- TLS ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    """A throwaway CA and a certificate it signed for 127.0.0.1 and localhost."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        """An SSL context for a server presenting the certificate."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        """An SSL context for a client that trusts only the throwaway CA."""
        return ssl.create_default_context(cafile=str(self.ca_file))


def make_tls_files(directory: Path) -> TlsFiles:
    """Write a fresh CA and a loopback server certificate into ``directory``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "MindBot test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    files.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


# --- SMTP ---------------------------------------------------------------------------------------


@dataclass
class ReceivedMail:
    """One message the SMTP server accepted."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    login: str | None
    tls: bool


@dataclass
class SmtpServer:
    """A running aiosmtpd server and everything it has received, oldest first."""

    host: str
    port: int
    security: Security
    username: str | None
    password: str | None
    ca_file: Path | None
    received: list[ReceivedMail] = field(default_factory=list)


class _NoLegacyLoginWarning(logging.Filter):
    """aiosmtpd warns about its own use of a deprecated field on every login; drop that line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "login_data is deprecated" not in record.getMessage()


logging.getLogger("mail.log").addFilter(_NoLegacyLoginWarning())


class _Keeper:
    """aiosmtpd handler that keeps every message, parsed."""

    def __init__(self, server: SmtpServer):
        self._server = server

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 (aiosmtpd's name)
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        self._server.received.append(
            ReceivedMail(
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                message=message,  # type: ignore[arg-type]
                login=session.auth_data.login.decode() if session.authenticated else None,
                tls=server.transport.get_extra_info("ssl_object") is not None,
            )
        )
        return "250 Message accepted for delivery"


@contextmanager
def smtp_server(
    *,
    username: str | None = "bot@example.com",
    password: str | None = "smtp-pass-123",
    security: Security = "none",
) -> Iterator[SmtpServer]:
    """An aiosmtpd server on 127.0.0.1 (its own thread), stopped when the block ends.

    Args:
        username: The one account that may log in; ``None``: no AUTH offered.
        password: Its password.
        security: ``none`` (plain), ``starttls`` (offered and required) or ``ssl`` (implicit).
    """
    with tempfile.TemporaryDirectory(prefix="mindbot-smtp-") as root:
        tls = make_tls_files(Path(root)) if security != "none" else None
        server = SmtpServer(
            host="127.0.0.1",
            port=free_port(),
            security=security,
            username=username,
            password=password,
            ca_file=tls.ca_file if tls else None,
        )

        def authenticate(smtp, session, envelope, mechanism, auth_data) -> AuthResult:
            ok = (
                isinstance(auth_data, LoginPassword)
                and auth_data.login.decode() == username
                and auth_data.password.decode() == password
            )
            return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

        options: dict = {}
        if username is not None:
            options.update(authenticator=authenticate, auth_require_tls=False)
        if tls and security == "starttls":
            options.update(tls_context=tls.server_context(), require_starttls=True)
        controller = Controller(
            _Keeper(server),
            hostname=server.host,
            port=server.port,
            ssl_context=tls.server_context() if tls and security == "ssl" else None,
            server_hostname="mail.example.test",
            ready_timeout=10,
            **options,
        )
        controller.start()
        try:
            yield server
        finally:
            controller.stop()


# --- IMAP ---------------------------------------------------------------------------------------


@dataclass
class ImapServer:
    """A running Dovecot with one user whose INBOX tests fill and inspect."""

    host: str
    port: int
    security: Security
    username: str
    password: str
    ca_file: Path | None
    root: Path
    pid: int
    _tls: TlsFiles | None = None

    def connect(self) -> imaplib.IMAP4:
        """A logged-in IMAP client (the test's own, not the code under test)."""
        if self.security == "ssl":
            assert self._tls is not None
            client: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                self.host, self.port, ssl_context=self._tls.client_context(), timeout=10
            )
        else:
            client = imaplib.IMAP4(self.host, self.port, timeout=10)
            if self.security == "starttls":
                assert self._tls is not None
                client.starttls(ssl_context=self._tls.client_context())
        client.login(self.username, self.password)
        return client

    def deliver(
        self,
        message: EmailMessage | bytes,
        *,
        seen: bool = False,
        when: dt.datetime | None = None,
    ) -> None:
        """Put a message in the INBOX (IMAP APPEND), unread unless ``seen``."""
        raw = message if isinstance(message, bytes) else message.as_bytes()
        client = self.connect()
        try:
            when = when or dt.datetime.now(dt.UTC)
            status, data = client.append(
                "INBOX", "(\\Seen)" if seen else "()", imaplib.Time2Internaldate(when), raw
            )
            assert status == "OK", data
        finally:
            client.logout()

    def flags(self) -> list[set[str]]:
        """Each INBOX message's flags, oldest first (read without changing them)."""
        client = self.connect()
        try:
            client.select("INBOX", readonly=True)
            status, data = client.fetch("1:*", "(FLAGS)")
            if status != "OK" or data == [None]:
                return []
            found = []
            for line in data:
                text = line.decode() if isinstance(line, bytes) else ""
                inside = text.split("FLAGS (", 1)[1].split(")", 1)[0] if "FLAGS (" in text else ""
                found.append(set(inside.split()) - {"\\Recent"})
            return found
        finally:
            client.logout()

    def log(self) -> str:
        """Dovecot's log so far."""
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextmanager
def imap_server(
    *,
    username: str = "sam",
    password: str = "imap-pass-123",
    security: Security = "none",
) -> Iterator[ImapServer]:
    """Dovecot (foreground, own config) on 127.0.0.1 with one user, stopped by PID at the end.

    Runs as root (mail owned by ``nobody``) or, for a developer's own account, as that user.

    Args:
        username: The one account.
        password: Its password.
        security: ``none`` (plain IMAP), ``starttls`` (plain port offering STARTTLS) or
            ``ssl`` (implicit TLS, as on port 993).

    Raises:
        RuntimeError: Dovecot is not installed or did not start (its log is in the message).
    """
    if not Path(DOVECOT).exists():
        pytest.skip("Dovecot is not installed (make test installs it: scripts/test-packages.sh)")
    # Short path: Dovecot's unix sockets live under it and sun_path is ~107 bytes.
    root = Path(tempfile.mkdtemp(prefix="mbimap-", dir="/tmp"))
    process = None
    try:
        root.chmod(0o755)  # the auth and mail processes run unprivileged
        as_root = os.geteuid() == 0
        account = pwd.getpwnam("nobody") if as_root else pwd.getpwuid(os.geteuid())
        (root / "mail").mkdir()
        os.chown(root / "mail", account.pw_uid, account.pw_gid)
        (root / "users").write_text(f"{username}:{{PLAIN}}{password}\n")
        (root / "users").chmod(0o644)
        tls = make_tls_files(root) if security != "none" else None
        if tls:
            tls.key_file.chmod(0o600)
        port = free_port()
        (root / "dovecot.conf").write_text(
            _dovecot_conf(root, port, security, tls, account, as_root)
        )
        process = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(root / "dovecot.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group, so its children die with it
        )
        server = ImapServer(
            host="127.0.0.1",
            port=port,
            security=security,
            username=username,
            password=password,
            ca_file=tls.ca_file if tls else None,
            root=root,
            pid=process.pid,
            _tls=tls,
        )
        _wait_for_greeting(server, process)
        yield server
    finally:
        if process is not None:
            _stop(process)
        shutil.rmtree(root, ignore_errors=True)


def _dovecot_conf(
    root: Path,
    port: int,
    security: Security,
    tls: TlsFiles | None,
    account: pwd.struct_passwd,
    as_root: bool,
) -> str:
    # Without root, every process runs as the caller and nothing can chroot.
    unprivileged = ""
    if not as_root:
        unprivileged = (
            f"default_login_user = {account.pw_name}\n"
            f"default_internal_user = {account.pw_name}\n"
            f"default_internal_group = {grp.getgrgid(account.pw_gid).gr_name}\n"
            "service anvil {\n  chroot =\n}\n"
        )
    login_chroot = "" if as_root else "  chroot =\n"
    ssl_lines = "ssl = no\n"
    if tls:
        ssl_lines = (
            f"ssl = {'required' if security == 'starttls' else 'yes'}\n"
            f"ssl_cert = <{tls.cert_file}\nssl_key = <{tls.key_file}\n"
        )
    plain_port, ssl_port = (0, port) if security == "ssl" else (port, 0)
    return f"""\
protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
{ssl_lines}disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
first_valid_uid = 1
mail_location = maildir:{root}/mail/%u
passdb {{
  driver = passwd-file
  args = {root}/users
}}
userdb {{
  driver = static
  args = uid={account.pw_uid} gid={account.pw_gid} home={root}/mail/%u
}}
{unprivileged}service imap-login {{
{login_chroot}  inet_listener imap {{
    address = 127.0.0.1
    port = {plain_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {ssl_port}
  }}
}}
"""


def _wait_for_greeting(server: ImapServer, process: subprocess.Popen, secs: float = 15) -> None:
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        if process.poll() is not None:
            errors = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise RuntimeError(f"dovecot exited with {process.returncode}: {errors}{server.log()}")
        try:
            with socket.create_connection((server.host, server.port), timeout=1) as sock:
                if server.security == "ssl":
                    return  # the TLS handshake is the client's business; the port answers
                if sock.recv(64).startswith(b"* OK"):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"dovecot did not answer on port {server.port}: {server.log()}")


def _stop(process: subprocess.Popen) -> None:
    """Terminate Dovecot's master by PID, then make sure none of its processes remain."""
    if process.poll() is None:
        process.terminate()
        # The master lingers about a second for its children; they can all stop now.
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    _signal_group(process, signal.SIGKILL)  # stragglers (log, auth...) in its group
    if process.stderr:
        process.stderr.close()


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass


# --- A server that never answers ------------------------------------------------------------------


@contextmanager
def silent_server() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that accepts connections and never says a word; yields the port."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
                held.append(connection)
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, name="silent-server", daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=2)
        for connection in held:
            connection.close()
        listener.close()
