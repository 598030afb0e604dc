"""Email: send a message over SMTP (after the caller's spoken yes) and hear what's new over IMAP.

Both use the standard library's blocking clients in a worker thread, with the tools' timeout on
every socket operation. Reading opens the INBOX read-only (EXAMINE and BODY.PEEK), so checking
mail never marks anything read. Addresses, subjects and bodies reach the logs at DEBUG only.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import email.utils
import imaplib
import re
import smtplib
import ssl
import unicodedata
from datetime import UTC, datetime
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.headerregistry import Address
from email.message import EmailMessage
from html.parser import HTMLParser
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from loguru import logger
from pydantic import AfterValidator, Field

from mindbot.tools.base import ToolContext, ToolError, ToolUnavailable, tool
from mindbot.tools.settings import EmailSettings

UNREACHABLE = "I couldn't reach the email server."
LOGIN_REFUSED = "The email server refused the login."
TOO_SLOW = "The email server took too long to answer."
NOT_SECURE = "I couldn't make a secure connection to the email server."
GARBLED = "The email server sent something I couldn't read."

#: How much of each message is fetched: the text part of nearly any email, not its attachments.
FETCH_BYTES = 256 * 1024

_LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_DOMAIN = re.compile(r"([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}")


# --- Arguments ----------------------------------------------------------------------------------


def _address(value: str) -> str:
    """The plain address ``value`` is, e.g. "sam@example.com"; nothing else gets through.

    Raises:
        ValueError: Not exactly one plain address (a display name, a list, a line break...).
    """
    problem = ValueError("it must be one plain email address, like sam@example.com")
    if len(value) > 254 or any(c.isspace() or not c.isprintable() for c in value):
        raise problem
    if email.utils.parseaddr(value) != ("", value):
        raise problem
    try:
        address = Address(addr_spec=value)
    except (ValueError, IndexError, HeaderParseError):
        raise problem from None
    if address.addr_spec != value or not (
        _LOCAL_PART.fullmatch(address.username) and _DOMAIN.fullmatch(address.domain)
    ):
        raise problem
    return value


def _one_line(value: str) -> str:
    """``value`` if it holds no line breaks or control characters (a header's worth of text)."""
    if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in value):
        raise ValueError("it must be one line of text")
    return value


Recipient = Annotated[str, AfterValidator(_address)]
Subject = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_one_line)]
Body = Annotated[str, Field(min_length=1, max_length=5000)]
Limit = Annotated[int, Field(ge=1, le=10)]


# --- Sending ------------------------------------------------------------------------------------


@tool(
    label="the email server",
    confirm=lambda a: f"send an email to {a['to']} with the subject {a['subject']}",
    available=lambda s: bool(s.email.smtp_host),
)
async def send_email(ctx: ToolContext, to: Recipient, subject: Subject, body: Body) -> dict:
    """Send an email from the assistant's mailbox. The caller is asked to confirm first.

    Args:
        to: The recipient's email address, e.g. "sam@example.com" (one address only).
        subject: The subject line, up to 200 characters.
        body: The message itself, as plain text, up to 5000 characters.
    """
    settings = ctx.settings.email
    # Checked again here: this function may be called without the session's validation.
    recipient, subject = _address(to), _one_line(subject)
    name, sender = _sender(settings)
    message = EmailMessage()
    message["From"] = Address(display_name=name, addr_spec=sender)
    message["To"] = recipient
    message["Subject"] = subject
    message["Date"] = email.utils.format_datetime(datetime.now(ZoneInfo(ctx.timezone)))
    message["Message-ID"] = email.utils.make_msgid(domain=sender.rpartition("@")[2])
    message.set_content(body.replace("\r\n", "\n").replace("\r", "\n"))
    await asyncio.to_thread(_send, settings, message, ctx.settings.timeout_secs)
    logger.info("email: sent a message")
    logger.debug(f"email: sent {subject!r} to {recipient}")
    return {"sent": True, "to": recipient, "subject": subject}


def _sender(settings: EmailSettings) -> tuple[str, str]:
    """The configured From: display name (maybe empty) and address."""
    name, address = email.utils.parseaddr(settings.from_address or settings.username or "")
    try:
        return name, _address(address)
    except ValueError:
        raise ToolError(
            "Email sending isn't set up with a valid from address.", kind="unavailable"
        ) from None


def _send(settings: EmailSettings, message: EmailMessage, timeout: float) -> None:
    """Deliver ``message`` to the SMTP server (blocking; run in a thread)."""
    host, port = settings.smtp_host or "", settings.smtp_port
    try:
        if settings.smtp_security == "ssl":
            client = smtplib.SMTP_SSL(host, port, timeout=timeout, context=_tls(settings))
        else:
            client = smtplib.SMTP(host, port, timeout=timeout)
        with client:
            if settings.smtp_security == "starttls":
                client.starttls(context=_tls(settings))
            if settings.username and settings.password:
                client.login(settings.username, settings.password.get_secret_value())
            client.send_message(message)
    except smtplib.SMTPAuthenticationError:
        raise ToolError(LOGIN_REFUSED, kind="rejected") from None
    except smtplib.SMTPNotSupportedError:
        raise ToolError(
            "The email server doesn't offer the secure connection or login I'm set up for.",
            kind="rejected",
        ) from None
    except smtplib.SMTPRecipientsRefused:
        raise ToolError("The email server refused that address.", kind="rejected") from None
    except smtplib.SMTPSenderRefused:
        raise ToolError(
            "The email server refused to send from the assistant's address.", kind="rejected"
        ) from None
    except smtplib.SMTPResponseException as e:
        if e.smtp_code < 500:
            raise ToolUnavailable("The email server can't take the message right now.") from None
        raise ToolError("The email server refused the message.", kind="rejected") from None
    except ssl.SSLError:
        raise ToolError(NOT_SECURE, kind="unavailable") from None
    except TimeoutError:
        raise ToolError(TOO_SLOW, kind="timeout") from None
    except OSError:  # also smtplib's other errors: a dropped connection, a garbled reply
        raise ToolUnavailable(UNREACHABLE) from None


def _tls(settings: EmailSettings) -> ssl.SSLContext:
    cafile = str(settings.tls_ca_file) if settings.tls_ca_file else None
    return ssl.create_default_context(cafile=cafile)


# --- Reading ------------------------------------------------------------------------------------


@tool(label="the email server", available=lambda s: bool(s.email.imap_host))
async def check_email(ctx: ToolContext, unread_only: bool = True, limit: Limit = 3) -> dict:
    """Check the inbox: how many emails are unread, and who sent the newest ones and about what.

    Args:
        unread_only: Describe only unread emails (true), or the newest ones, read or not (false).
        limit: How many of the newest emails to describe, 1 to 10.
    """
    settings = ctx.settings.email
    if not (settings.username and settings.password):
        raise ToolError("Email reading isn't set up with a login.", kind="unavailable")
    counts, found = await asyncio.to_thread(
        _check_inbox, settings, unread_only, limit, ctx.settings.timeout_secs
    )
    zone = ZoneInfo(ctx.timezone)
    snippet_chars = 150 if limit <= 5 else 80  # ten long summaries would not fit one result
    messages = [_summary(raw, unread, zone, snippet_chars) for raw, unread in found]
    logger.debug(f"email: {counts['unread']} unread, described {len(messages)}")
    return {**counts, "messages": messages}


def _check_inbox(
    settings: EmailSettings, unread_only: bool, limit: int, timeout: float
) -> tuple[dict[str, Any], list[tuple[bytes, bool]]]:
    """The INBOX's counts, and the newest messages' raw bytes and whether each is unread.

    Blocking: run it in a thread.
    """
    client = _imap_login(settings, timeout)
    try:
        status, data = client.select("INBOX", readonly=True)  # EXAMINE: nothing becomes seen
        if status != "OK":
            raise ToolError("The email server wouldn't open the inbox.", kind="failed")
        total = _number(data[0])
        unseen = _search(client, "UNSEEN")
        uids = unseen if unread_only else _search(client, "ALL")
        newest = sorted(uids, reverse=True)[:limit]  # UIDs grow with arrival
        raw = _fetch(client, newest)
    except (imaplib.IMAP4.error, OSError) as e:
        raise _imap_error(e, ToolError(GARBLED, kind="failed"), client) from None
    finally:
        with contextlib.suppress(Exception):
            client.logout()
    counts = {
        "unread": len(unseen),
        "total": total,
        "showing": "unread" if unread_only else "newest",
    }
    return counts, [(raw[uid], uid in unseen) for uid in newest if uid in raw]


def _imap_login(settings: EmailSettings, timeout: float) -> imaplib.IMAP4:
    """A logged-in IMAP client, or the error to speak."""
    host, port = settings.imap_host or "", settings.imap_port
    try:
        if settings.imap_security == "ssl":
            client = imaplib.IMAP4_SSL(host, port, ssl_context=_tls(settings), timeout=timeout)
        else:
            client = imaplib.IMAP4(host, port, timeout=timeout)
    except (imaplib.IMAP4.error, OSError) as e:  # IMAP4.error: a greeting that isn't IMAP
        raise _imap_error(e, ToolError(GARBLED, kind="failed")) from None
    if settings.imap_security == "starttls":
        try:
            client.starttls(ssl_context=_tls(settings))
        except (imaplib.IMAP4.error, OSError) as e:  # IMAP4.error: STARTTLS is not on offer
            raise _imap_error(e, ToolError(NOT_SECURE, kind="unavailable"), client) from None
    assert settings.username and settings.password
    username, password = settings.username, settings.password.get_secret_value()
    try:
        if password.isascii() and username.isascii():
            client.login(username, password)
        else:  # LOGIN is ASCII-only; SASL PLAIN carries UTF-8
            plain = f"\0{username}\0{password}".encode()
            client.authenticate("PLAIN", lambda _: plain)
    except (imaplib.IMAP4.error, OSError) as e:
        raise _imap_error(e, ToolError(LOGIN_REFUSED, kind="rejected"), client) from None
    return client


def _imap_error(
    error: Exception, refused: ToolError, client: imaplib.IMAP4 | None = None
) -> ToolError:
    """What imaplib raised, as the error to speak; ``refused`` for a NO or BAD reply.

    A failed client is shut down, so that logging out cannot wait on a hung server.
    """
    if client is not None:
        with contextlib.suppress(Exception):
            client.shutdown()
    if isinstance(error, imaplib.IMAP4.abort):
        return ToolUnavailable(UNREACHABLE)
    if isinstance(error, imaplib.IMAP4.error):
        return refused
    if isinstance(error, ssl.SSLError):
        return ToolError(NOT_SECURE, kind="unavailable")
    if isinstance(error, TimeoutError):
        return ToolError(TOO_SLOW, kind="timeout")
    return ToolUnavailable(UNREACHABLE)


def _search(client: imaplib.IMAP4, criteria: str) -> list[int]:
    status, data = client.uid("SEARCH", criteria)
    if status != "OK" or not data:
        raise ToolError(GARBLED, kind="failed")
    words = b" ".join(part for part in data if isinstance(part, bytes)).split()
    if not all(word.isdigit() for word in words):
        raise ToolError(GARBLED, kind="failed")
    return [int(word) for word in words]


def _fetch(client: imaplib.IMAP4, uids: list[int]) -> dict[int, bytes]:
    """The first ``FETCH_BYTES`` of each message, by UID, without setting ``\\Seen``."""
    if not uids:
        return {}
    status, data = client.uid(
        "FETCH", ",".join(map(str, uids)), f"(UID BODY.PEEK[]<0.{FETCH_BYTES}>)"
    )
    if status != "OK":
        raise ToolError(GARBLED, kind="failed")
    found: dict[int, bytes] = {}
    literals = 0
    for index, item in enumerate(data):
        if not isinstance(item, tuple) or len(item) != 2:
            continue
        literals += 1
        # The UID usually precedes the literal, but a server may send it after.
        after = data[index + 1] if index + 1 < len(data) else b""
        match = re.search(rb"UID (\d+)", item[0]) or re.search(
            rb"UID (\d+)", after if isinstance(after, bytes) else b""
        )
        if match and isinstance(item[1], bytes):
            found[int(match.group(1))] = item[1]
    if literals and not found:
        raise ToolError(GARBLED, kind="failed")
    return found  # a message deleted meanwhile is simply missing


def _number(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ToolError(GARBLED, kind="failed") from None


# --- Summaries for the ear ----------------------------------------------------------------------


def _summary(raw: bytes, unread: bool, zone: ZoneInfo, snippet_chars: int) -> dict[str, Any]:
    """Who sent a message, about what, when, and how it begins."""
    try:
        message = email.message_from_bytes(raw, policy=email.policy.default)
    except Exception:  # hopelessly malformed: still count it, say nothing about it
        return {"from": "an unknown sender", "subject": "no subject", "unread": unread}
    summary: dict[str, Any] = {
        "from": _cut(_speakable(_sender_name(message)), 60) or "an unknown sender",
        "subject": _cut(_speakable(_header(message, "Subject")), 120) or "no subject",
    }
    if received := _received(message, zone):
        summary["received"] = received
    summary["unread"] = unread
    summary["snippet"] = _cut(_speakable(_snippet(message)), snippet_chars)
    return summary


def _speakable(text: str) -> str:
    """``text`` as one clean line: no undecodable bytes, control characters or bare symbols."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    text = "".join(
        " " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in text if c != "\ufffd"
    )
    text = " ".join(text.split())
    return text if any(c.isalnum() for c in text) else ""


def _header(message: EmailMessage, name: str) -> str:
    """A header's text, MIME-decoded, on one line ("" when missing or hopeless)."""
    try:
        value = message.get(name)
        text = str(value) if value is not None else ""
    except Exception:  # the modern parser gives up on some malformed headers
        raw = next((v for k, v in message.raw_items() if k.lower() == name.lower()), "")
        try:
            text = str(make_header(decode_header(str(raw))))
        except Exception:
            text = str(raw)
    return " ".join(text.split())


def _sender_name(message: EmailMessage) -> str:
    """The sender's display name, else their address."""
    try:
        addresses = message["From"].addresses  # type: ignore[union-attr]
        if addresses:
            return addresses[0].display_name or addresses[0].addr_spec
    except Exception:  # a malformed From: read it as text instead
        pass
    name, address = email.utils.parseaddr(_header(message, "From"))
    return name or address


def _received(message: EmailMessage, zone: ZoneInfo) -> str | None:
    """When it was sent, in the caller's time zone, e.g. "Monday 3 March, 9:14 AM"."""
    try:
        sent = email.utils.parsedate_to_datetime(_header(message, "Date"))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if sent.tzinfo is None:
        sent = sent.replace(tzinfo=UTC)
    return sent.astimezone(zone).strftime("%A %-d %B, %-I:%M %p")


def _snippet(message: EmailMessage) -> str:
    """The start of the text body, without quotes, signatures or links ("" if none)."""
    try:
        part = message.get_body(preferencelist=("plain", "html"))
        if part is None:
            return ""
        text = _part_text(part)
        if part.get_content_subtype() == "html":
            text = _html_text(text)
    except Exception:  # a broken MIME structure: say nothing rather than fail
        return ""
    lines = [line.strip() for line in text.splitlines()]
    filled = [line for line in lines if line]
    kept = []
    for index, line in enumerate(filled):
        if line == "--" or re.fullmatch(r"-+ ?Original Message ?-+", line, re.I):
            break  # a signature or a forwarded/replied-to message follows
        following = filled[index + 1] if index + 1 < len(filled) else ""
        if line.endswith(":") and following.startswith(">"):
            break  # "On Monday, Sam wrote:" (in any language) introduces the quote
        if not line.startswith(">"):
            kept.append(line)
    text = re.sub(r"https?://\S+|www\.\S+", "a link", " ".join(kept))
    return " ".join(text.split())


def _part_text(part: EmailMessage) -> str:
    try:
        content = part.get_content()
        if isinstance(content, str):
            return content
    except (LookupError, UnicodeError, ValueError, AssertionError):
        pass
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:  # an unknown charset
        return payload.decode("utf-8", errors="replace")


class _HtmlText(HTMLParser):
    """The words of an HTML body, with block elements as line breaks."""

    _SKIP = frozenset({"script", "style", "title"})
    _BLOCK = frozenset(
        {"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0
        self._quoting = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag == "blockquote":
            self._quoting += 1
        if tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag == "blockquote":
            self._quoting = max(0, self._quoting - 1)
        if tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not (self._skipping or self._quoting):
            self.parts.append(data)


def _html_text(html: str) -> str:
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    return "".join(parser.parts)


def _cut(text: str, limit: int) -> str:
    """``text`` cut at a word boundary to at most ``limit`` characters."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0].rstrip(" ,;:.-")
    return f"{cut}…"
