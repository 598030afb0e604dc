"""The email tools against real servers on loopback: aiosmtpd (SMTP) and Dovecot (IMAP)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
from loguru import logger

from mindbot.harness import free_port
from mindbot.tools import ToolContext, ToolSession, ToolSettings
from mindbot.tools.email import check_email, send_email
from mindbot.tools.settings import EmailSettings

from conftest import wait_until
from servers.mail import DOVECOT, imap_server, silent_server, smtp_server

needs_dovecot = pytest.mark.skipif(not Path(DOVECOT).exists(), reason="dovecot is not installed")

BOT = "bot@example.com"


# --- Fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture
def smtp():
    with smtp_server(username=BOT) as server:
        yield server


@pytest.fixture
def imap():
    with imap_server() as server:
        yield server


@pytest.fixture
def info_logs():
    """Every loguru line at INFO and above during the test."""
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="INFO")
    yield lines
    logger.remove(sink)


def settings_for(smtp=None, imap=None, *, timeout_secs: float = 5, **email) -> ToolSettings:
    """Tool settings pointing at the test servers (plain connections unless they use TLS)."""
    values: dict = {}
    if smtp is not None:
        values.update(
            smtp_host=smtp.host,
            smtp_port=smtp.port,
            smtp_security=smtp.security,
            username=smtp.username,
            password=smtp.password,
            from_address=f"MindBot <{BOT}>",
            tls_ca_file=smtp.ca_file,
        )
    if imap is not None:
        values.update(
            imap_host=imap.host,
            imap_port=imap.port,
            imap_security=imap.security,
            username=imap.username,
            password=imap.password,
            tls_ca_file=imap.ca_file,
        )
    values.update(email)
    return ToolSettings(email=EmailSettings(**values), timeout_secs=timeout_secs, retries=1)


@asynccontextmanager
async def session_for(settings: ToolSettings, reports: list | None = None):
    async with httpx.AsyncClient() as http:
        context = ToolContext(settings=settings, http=http, timezone="Europe/Paris")
        on_call = reports.append if reports is not None else None
        yield ToolSession([send_email, check_email], context, on_call=on_call)


LUNCH = {
    "to": "sam@example.com",
    "subject": "Lunch on Friday? ☕",
    "body": "Shall we meet at noon?",
}


def mail(
    sender: str, subject: str, text: str | None = None, html: str | None = None
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = "sam@example.com"
    message["Subject"] = subject
    message["Date"] = "Mon, 03 Mar 2025 08:14:00 +0000"
    if text is not None:
        message.set_content(text)
    if html is not None:
        if text is None:
            message.set_content(html, subtype="html")
        else:
            message.add_alternative(html, subtype="html")
    return message


# --- Sending ------------------------------------------------------------------------------------


async def test_send_email_waits_for_a_yes_then_delivers(smtp, info_logs):
    reports: list = []
    async with session_for(settings_for(smtp), reports) as session:
        proposed = await session.invoke("send_email", LUNCH, user_turns=["email Sam"])
        assert proposed["needs_confirmation"] is True
        assert proposed["action"] == (
            "send an email to sam@example.com with the subject Lunch on Friday? ☕"
        )
        assert smtp.received == []

        done = await session.invoke("confirm_action", {}, user_turns=["email Sam", "yes please"])

    assert done == {
        "ok": True,
        "result": {"sent": True, "to": "sam@example.com", "subject": "Lunch on Friday? ☕"},
    }
    [received] = smtp.received
    assert received.mail_from == BOT
    assert received.rcpt_tos == ["sam@example.com"]
    assert received.login == BOT
    assert received.message["From"].addresses[0].display_name == "MindBot"
    assert received.message["To"] == "sam@example.com"
    assert received.message["Subject"] == "Lunch on Friday? ☕"  # RFC 2047 on the wire
    assert received.message.get_content().strip() == "Shall we meet at noon?"
    assert received.message["Message-ID"].endswith("@example.com>")
    assert [r.status for r in reports] == ["awaiting_confirmation", "ok"]
    assert reports[-1].name == "send_email" and reports[-1].confirmed
    logged = "\n".join(info_logs)
    for private in ("sam@example.com", "Lunch", "noon", smtp.password):
        assert private not in logged


async def test_a_no_sends_nothing(smtp):
    async with session_for(settings_for(smtp)) as session:
        await session.invoke("send_email", LUNCH, user_turns=["email Sam"])
        declined = await session.invoke("confirm_action", {}, user_turns=["email Sam", "no"])
        again = await session.invoke(
            "confirm_action", {}, user_turns=["email Sam", "no", "yes please"]
        )
    assert declined["ok"] is False and declined["error"] == "not_confirmed"
    assert "said no" in declined["message"]
    assert again["error"] == "not_confirmed"  # nothing is waiting any more
    assert smtp.received == []


@pytest.mark.parametrize(
    "arguments",
    [
        {"to": "sam@example.com\r\nBcc: evil@x.com"},
        {"to": "sam@example.com, evil@x.com"},
        {"to": "Sam <evil@x.com>"},
        {"to": "sam@example.com\nBcc: evil@x.com"},
        {"to": "not an address"},
        {"subject": "Hello\r\nBcc: evil@x.com"},
        {"subject": "Hello\nX-Injected: yes"},
        {"subject": ""},
        {"subject": "x" * 201},
        {"body": ""},
        {"body": "x" * 5001},
    ],
)
async def test_bad_or_injected_arguments_are_rejected_before_anything_is_sent(smtp, arguments):
    async with session_for(settings_for(smtp)) as session:
        result = await session.invoke("send_email", {**LUNCH, **arguments}, user_turns=["go"])
        assert session.pending_action is None
        confirm = await session.invoke("confirm_action", {}, user_turns=["go", "yes please"])
    assert result["ok"] is False and result["error"] == "bad_arguments"
    assert list(arguments)[0] in result["message"]
    assert confirm["error"] == "not_confirmed"
    assert smtp.received == []


@pytest.mark.parametrize("security", ["starttls", "ssl"])
async def test_send_email_over_tls(security):
    with smtp_server(username=BOT, security=security) as server:
        async with session_for(settings_for(server)) as session:
            await session.invoke("send_email", LUNCH, user_turns=["email Sam"])
            done = await session.invoke("confirm_action", {}, user_turns=["email Sam", "yes"])
        assert done["ok"] is True, done
        [received] = server.received
        assert received.tls is True
        assert received.login == BOT


async def test_a_wrong_smtp_password_is_rejected(smtp):
    async with session_for(settings_for(smtp, password="wrong-pass")) as session:
        await session.invoke("send_email", LUNCH, user_turns=["email Sam"])
        result = await session.invoke("confirm_action", {}, user_turns=["email Sam", "yes"])
    assert result == {
        "ok": False,
        "error": "rejected",
        "message": "The email server refused the login.",
    }
    assert smtp.received == []


async def test_smtp_down_is_unavailable():
    settings = ToolSettings(
        email=EmailSettings(
            smtp_host="127.0.0.1", smtp_port=free_port(), smtp_security="none", username=BOT
        )
    )
    async with session_for(settings) as session:
        await session.invoke("send_email", LUNCH, user_turns=["email Sam"])
        result = await session.invoke("confirm_action", {}, user_turns=["email Sam", "yes"])
    assert result == {
        "ok": False,
        "error": "unavailable",
        "message": "I couldn't reach the email server.",
    }


async def test_an_smtp_server_that_never_answers_times_out():
    with silent_server() as port:
        settings = ToolSettings(
            email=EmailSettings(
                smtp_host="127.0.0.1", smtp_port=port, smtp_security="none", username=BOT
            ),
            timeout_secs=0.5,
        )
        async with session_for(settings) as session:
            await session.invoke("send_email", LUNCH, user_turns=["email Sam"])
            began = time.perf_counter()
            result = await session.invoke("confirm_action", {}, user_turns=["email Sam", "yes"])
    assert result["error"] == "timeout"
    assert time.perf_counter() - began < 3


def test_the_tools_are_offered_only_when_configured():
    assert not send_email.available(ToolSettings())
    assert not check_email.available(ToolSettings())
    configured = ToolSettings(email=EmailSettings(smtp_host="smtp.x.com", imap_host="imap.x.com"))
    assert send_email.available(configured) and check_email.available(configured)


# --- Reading ------------------------------------------------------------------------------------

# Written by hand so the headers and body are encoded exactly as a real mailer would.
ENCODED = (
    b"From: =?utf-8?q?Jos=C3=A9_P=C3=A9rez?= <jose@example.com>\r\n"
    b"To: sam@example.com\r\n"
    b"Subject: =?iso-8859-1?q?R=E9union_demain?= =?utf-8?b?4piV?=\r\n"
    b"Date: Mon, 03 Mar 2025 09:30:00 +0000\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: text/plain; charset="iso-8859-1"\r\n'
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Bonjour Sam, la r=E9union est =E0 10h.\r\n"
    b"D=E9tails: https://example.com/agenda?id=3D42\r\n"
    b"\r\n"
    b"Le 2 mars, Sam a =E9crit:\r\n"
    b"> vieux texte cit=E9\r\n"
    b"-- \r\n"
    b"Jos=E9, t=E9l 555 0100\r\n"
)


@needs_dovecot
async def test_check_email_tells_the_newest_unread_and_leaves_them_unread(imap, info_logs):
    imap.deliver(mail("Old Friend <old@example.com>", "Already read", "Seen it."), seen=True)
    imap.deliver(
        mail(
            '"Ana Li" <ana@example.com>',
            "Invoice 42",
            html=(
                "<html><head><style>p {color: red}</style><script>alert('x')</script></head>"
                "<body><p>Your invoice is <b>ready</b> &amp; due Friday.</p>"
                "<blockquote>older thread</blockquote></body></html>"
            ),
        )
    )
    imap.deliver(
        mail(
            "Bob <bob@example.com>", "Weekend plans", "Hiking on Saturday?\n\n> quoted", "<p>x</p>"
        )
    )
    imap.deliver(ENCODED)
    before = imap.flags()

    async with session_for(settings_for(imap=imap)) as session:
        result = await session.invoke("check_email", {})

    assert result["ok"] is True, result
    inbox = result["result"]
    assert inbox["unread"] == 3 and inbox["total"] == 4 and inbox["showing"] == "unread"
    assert [m["from"] for m in inbox["messages"]] == ["José Pérez", "Bob", "Ana Li"]
    assert [m["subject"] for m in inbox["messages"]] == [
        "Réunion demain☕",
        "Weekend plans",
        "Invoice 42",
    ]
    newest, bob, ana = inbox["messages"]
    assert newest["snippet"] == "Bonjour Sam, la réunion est à 10h. Détails: a link"
    assert newest["received"] == "Monday 3 March, 10:30 AM"  # in the caller's Paris time
    assert bob["snippet"] == "Hiking on Saturday?"  # the plain part, without the quote
    assert ana["snippet"] == "Your invoice is ready & due Friday."
    assert all(m["unread"] for m in inbox["messages"])
    assert imap.flags() == before  # EXAMINE and BODY.PEEK: nothing was marked read
    assert before[1:] == [set(), set(), set()]
    logged = "\n".join(info_logs)
    assert "Pérez" not in logged and "invoice" not in logged and imap.password not in logged


@needs_dovecot
async def test_check_email_can_tell_the_newest_read_or_not(imap):
    imap.deliver(mail("Ana <ana@example.com>", "First", "one"))
    imap.deliver(mail("Bob <bob@example.com>", "Second", "two"), seen=True)
    imap.deliver(mail("Cy <cy@example.com>", "Third", "three"), seen=True)

    async with session_for(settings_for(imap=imap)) as session:
        result = await session.invoke("check_email", {"unread_only": False, "limit": 2})

    inbox = result["result"]
    assert inbox["unread"] == 1 and inbox["showing"] == "newest"
    assert [(m["subject"], m["unread"]) for m in inbox["messages"]] == [
        ("Third", False),
        ("Second", False),
    ]


@needs_dovecot
async def test_an_empty_inbox_says_so(imap):
    async with session_for(settings_for(imap=imap)) as session:
        result = await session.invoke("check_email", {"limit": 10})
    assert result["result"] == {"unread": 0, "total": 0, "showing": "unread", "messages": []}


@needs_dovecot
async def test_malformed_messages_are_summarized_not_fatal(imap):
    imap.deliver(
        b"From: =?bogus-charset?q?Zo=EB?= <zoe@example.com>\r\n"
        b"Subject: =?utf-8?q?broken=ZZencoding?=\r\n"
        b"Date: the day before yesterday\r\n"
        b"Content-Type: text/plain; charset=x-unknown-charset\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b"\r\n"
        b"SGVsbG8gdGhlcmU=\r\n"
    )
    imap.deliver(
        b"Subject: attachment only\r\n"
        b"Content-Type: multipart/mixed; boundary=missing\r\n"
        b"\r\n"
        b"no boundary ever appears\r\n"
    )

    imap.deliver(b"\xff\xfe\x00not an email at all\r\n\r\n\x00\x01")

    async with session_for(settings_for(imap=imap)) as session:
        result = await session.invoke("check_email", {})

    assert result["ok"] is True, result
    json.dumps(result, ensure_ascii=False).encode()  # no lone surrogates from bad bytes
    garbage, attachment, broken = result["result"]["messages"]
    assert garbage["from"] == "an unknown sender" and garbage["subject"] == "no subject"
    assert attachment["from"] == "an unknown sender"
    assert attachment["subject"] == "attachment only"
    assert attachment["snippet"] == ""
    assert broken["from"].startswith("Zo")  # the undecodable "ë" is dropped, not garbled
    assert broken["snippet"] == "Hello there"  # base64 in an unknown charset, read as UTF-8
    assert "received" not in broken


@needs_dovecot
@pytest.mark.parametrize("security", ["starttls", "ssl"])
async def test_check_email_over_tls(security):
    with imap_server(security=security) as server:
        server.deliver(mail("Ana <ana@example.com>", "Secure hello", "Over TLS."))
        async with session_for(settings_for(imap=server)) as session:
            result = await session.invoke("check_email", {})
    assert result["ok"] is True, result
    assert result["result"]["messages"][0]["subject"] == "Secure hello"


@needs_dovecot
async def test_a_wrong_imap_password_is_rejected(imap, info_logs):
    reports: list = []
    async with session_for(settings_for(imap=imap, password="not-the-password"), reports) as s:
        result = await s.invoke("check_email", {})
    assert result == {
        "ok": False,
        "error": "rejected",
        "message": "The email server refused the login.",
    }
    assert reports[0].status == "error"
    assert "not-the-password" not in "\n".join(info_logs)
    assert "not-the-password" not in str(reports[0])
    await wait_until(lambda: "auth failed" in imap.log(), timeout=3)
    assert imap.log().count("auth failed, 1 attempts") == 1  # one try: a refusal is not retried


async def test_imap_down_is_unavailable():
    settings = ToolSettings(
        email=EmailSettings(
            imap_host="127.0.0.1",
            imap_port=free_port(),
            imap_security="none",
            username="sam",
            password="x",
        ),
        retries=1,
    )
    async with session_for(settings) as session:
        result = await session.invoke("check_email", {})
    assert result == {
        "ok": False,
        "error": "unavailable",
        "message": "I couldn't reach the email server.",
    }


async def test_an_imap_server_that_never_answers_times_out():
    with silent_server() as port:
        settings = ToolSettings(
            email=EmailSettings(
                imap_host="127.0.0.1",
                imap_port=port,
                imap_security="none",
                username="sam",
                password="x",
            ),
            timeout_secs=0.5,
        )
        async with session_for(settings) as session:
            began = time.perf_counter()
            result = await session.invoke("check_email", {})
    assert result == {
        "ok": False,
        "error": "timeout",
        "message": "The email server took too long to answer.",
    }
    assert time.perf_counter() - began < 3


@contextmanager
def scripted_imap(search_reply: bytes) -> Iterator[int]:
    """An IMAP server that logs anyone in, then answers SEARCH with ``search_reply``."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        try:
            connection, _ = listener.accept()
        except OSError:  # closed before anyone came
            return
        with connection, connection.makefile("rwb") as stream:
            stream.write(b"* OK [CAPABILITY IMAP4rev1] scripted\r\n")
            stream.flush()
            for line in stream:
                tag, command = line.split(b" ", 2)[:2]
                command = command.strip().upper()
                if command == b"CAPABILITY":
                    stream.write(b"* CAPABILITY IMAP4rev1\r\n")
                elif command == b"EXAMINE":
                    stream.write(b"* 2 EXISTS\r\n")
                elif command == b"UID":
                    stream.write(search_reply)
                elif command == b"LOGOUT":
                    stream.write(b"* BYE\r\n")
                stream.write(tag + b" OK done\r\n")
                stream.flush()
                if command == b"LOGOUT":
                    return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(timeout=2)


async def test_a_garbled_imap_reply_is_an_error_not_a_crash():
    with scripted_imap(b"* SEARCH 1 two; DROP\r\n") as port:
        settings = ToolSettings(
            email=EmailSettings(
                imap_host="127.0.0.1",
                imap_port=port,
                imap_security="none",
                username="sam",
                password="x",
            )
        )
        async with session_for(settings) as session:
            result = await session.invoke("check_email", {})
    assert result == {
        "ok": False,
        "error": "failed",
        "message": "The email server sent something I couldn't read.",
    }
