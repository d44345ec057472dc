#!/usr/bin/env python3
"""Capture SMTP server for envoi's out-of-process tests, built on aiosmtpd (>= 1.4.6).

Listens on 127.0.0.1 only, prints one line `READY <port>` to stdout once listening, and writes
each accepted message to OUT/NNNN.json (atomically: temp file + rename):
    {"mail_from": str, "rcpt_tos": [str], "data_b64": str (message bytes as received),
     "auth_user": str | null, "tls": bool}
Every command line the client sends (not DATA content, not AUTH continuation lines) is appended
to OUT/transcript.log; aiosmtpd masks the initial response of `AUTH <mech> <response>` as ********.
With --oauth USER:TOKEN (repeatable: any of the tokens is accepted) it also offers XOAUTH2 and
OAUTHBEARER (RFC 7628), as Gmail and Microsoft 365 speak them: a wrong token is answered `334 <base64 JSON error>`, and only after the
client's reply to that (an empty line, or ^A for OAUTHBEARER) comes the 535. Each decoded SASL
message is appended to OUT/sasl.log as one JSON line {"mechanism", "message", "ok"}.
With --auth-reply TEXT every AUTH PLAIN/LOGIN is refused with exactly that reply, and with
--mail-reply TEXT every MAIL FROM is: Microsoft 365's words when Basic authentication or SMTP
AUTH is off (`535 5.7.139 …`, `550 5.7.30 …`, `530 5.7.57 …`), for docs/microsoft-365.md.
Stops on SIGTERM or SIGINT (and, with --exit-on-stdin-eof, when stdin closes: the parent died).
"""
import argparse
import asyncio
import base64
import itertools
import json
import logging
import os
import signal
import ssl
import sys
import threading

try:
    from aiosmtpd.smtp import SMTP, AuthResult
except ImportError:
    print("aiosmtpd_capture: python module aiosmtpd is not installed", file=sys.stderr)
    sys.exit(3)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    p.add_argument("--security", choices=("none", "starttls", "tls"), default="none")
    p.add_argument("--cert", help="PEM: leaf certificate, optionally followed by its CA chain")
    p.add_argument("--key", help="PEM private key")
    p.add_argument("--auth", metavar="USER:PASS", help="accept AUTH PLAIN/LOGIN with these")
    p.add_argument("--oauth", metavar="USER:TOKEN", action="append", default=[],
                   help="accept XOAUTH2/OAUTHBEARER with these (repeatable, one user)")
    p.add_argument("--auth-reply", metavar="TEXT", help="refuse every AUTH PLAIN/LOGIN with this reply")
    p.add_argument("--mail-reply", metavar="TEXT", help="refuse every MAIL FROM with this reply")
    p.add_argument("--require-starttls", action="store_true", help="starttls mode: 530 before STARTTLS")
    p.add_argument("--refuse-rcpt", metavar="ADDR=CODE", action="append", default=[])
    p.add_argument("--out", required=True, help="directory for NNNN.json and transcript.log")
    p.add_argument("--exit-on-stdin-eof", action="store_true")
    a = p.parse_args()
    if a.security != "none" and not (a.cert and a.key):
        p.error("--security starttls|tls needs --cert and --key")
    return a


class Capture:
    """aiosmtpd handler: applies --refuse-rcpt and stores each message."""

    def __init__(self, out, refuse, mail_reply=None):
        self.out, self.refuse, self.seq = out, refuse, itertools.count(1)
        self.mail_reply = mail_reply

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.mail_reply is not None:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        code = self.refuse.get(address.lower())
        if code is not None:
            return f"{code} {address} refused by test server"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        login = session.auth_data.login if session.authenticated else None
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "data_b64": base64.b64encode(envelope.original_content).decode("ascii"),
            "auth_user": login.decode("utf-8", "replace") if login is not None else None,
            "tls": server.transport.get_extra_info("ssl_object") is not None,
        }
        name = f"{next(self.seq):04d}.json"
        tmp = os.path.join(self.out, f".{name}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f)
        os.replace(tmp, os.path.join(self.out, name))
        return "250 OK captured"


class TranscriptHandler(logging.Handler):
    """aiosmtpd logs each client command line at INFO as ('%r >> %r', peer, line)."""

    def __init__(self, path):
        super().__init__(logging.INFO)
        self.file = open(path, "ab", buffering=0)

    def emit(self, record):
        if record.msg == "%r >> %r" and record.levelno == logging.INFO and len(record.args) == 2:
            line = record.args[1]
            self.file.write((line if isinstance(line, bytes) else str(line).encode()) + b"\n")


class OAuthCapture(Capture):
    """Capture plus XOAUTH2 and OAUTHBEARER, checked the way the big providers check them."""

    ERROR = json.dumps({"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"},
                       separators=(",", ":"))

    def __init__(self, out, refuse, user, tokens):
        super().__init__(out, refuse)
        self.user, self.tokens = user, tokens

    def record(self, mechanism, message, ok):
        with open(os.path.join(self.out, "sasl.log"), "a", encoding="utf-8") as f:
            f.write(json.dumps({"mechanism": mechanism, "message": message, "ok": ok}) + "\n")

    async def bearer(self, server, args, mechanism, expected_any, error_reply):
        if len(args) == 2:
            try:
                blob = base64.b64decode(args[1], validate=True)
            except ValueError:
                return AuthResult(success=False, handled=False)
        else:
            blob = await server.challenge_auth("")
            if not isinstance(blob, bytes):
                return AuthResult(success=False, handled=True)
        message = blob.decode("utf-8", "replace")
        ok = message in expected_any
        self.record(mechanism, message, ok)
        if ok:
            from aiosmtpd.smtp import LoginPassword
            return AuthResult(success=True, auth_data=LoginPassword(self.user.encode(), b""))
        # The provider's error challenge; the client must answer it before the 535.
        answer = await server.challenge_auth(self.ERROR)
        self.record(mechanism + " error reply", answer.decode("latin-1") if isinstance(answer, bytes) else None,
                    answer == error_reply)
        return AuthResult(success=False, handled=False,
                          message="535 5.7.8 Username and Password not accepted")

    async def auth_XOAUTH2(self, server, args):
        expected = {f"user={self.user}\x01auth=Bearer {t}\x01\x01" for t in self.tokens}
        return await self.bearer(server, args, "XOAUTH2", expected, b"")

    async def auth_OAUTHBEARER(self, server, args):
        host, port = server.transport.get_extra_info("sockname")[:2]
        expected = {(f"n,a={self.user},\x01host=localhost\x01port={port}"
                     f"\x01auth=Bearer {t}\x01\x01") for t in self.tokens}
        return await self.bearer(server, args, "OAUTHBEARER", expected, b"\x01")


def make_authenticator(user, password, reply=None):
    def authenticator(server, session, envelope, mechanism, auth_data):
        if reply is not None:
            return AuthResult(success=False, handled=False, message=reply)
        ok = auth_data.login == user.encode() and auth_data.password == password.encode()
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    return authenticator


async def serve(a):
    os.makedirs(a.out, exist_ok=True)
    log = logging.getLogger("mail.log")
    log.setLevel(logging.INFO)
    log.propagate = False
    log.addHandler(TranscriptHandler(os.path.join(a.out, "transcript.log")))

    refuse = {}
    for item in a.refuse_rcpt:
        addr, _, code = item.rpartition("=")
        refuse[addr.lower()] = int(code)
    if a.oauth:
        pairs = [item.partition(":") for item in a.oauth]
        oauth_user = pairs[0][0]
        if any(user != oauth_user for user, _, _ in pairs):
            sys.exit("aiosmtpd_capture: every --oauth must name the same user")
        handler = OAuthCapture(a.out, refuse, oauth_user, [token for _, _, token in pairs])
    else:
        handler = Capture(a.out, refuse, a.mail_reply)

    tls_ctx = None
    if a.security != "none":
        tls_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls_ctx.load_cert_chain(a.cert, a.key)
    kwargs = {"hostname": "capture.test"}
    if a.auth:
        user, _, password = a.auth.partition(":")
        kwargs["authenticator"] = make_authenticator(user, password, a.auth_reply)
    if a.security == "starttls":
        # AUTH is offered only after STARTTLS (aiosmtpd's default auth_require_tls=True).
        kwargs.update(tls_context=tls_ctx, require_starttls=a.require_starttls)
    else:
        # Plain: AUTH offered in clear. Implicit TLS: aiosmtpd cannot see the TLS of the
        # listener and would hide AUTH unless auth_require_tls is off.
        kwargs["auth_require_tls"] = False

    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, **kwargs),
        host="127.0.0.1",
        port=a.port,
        ssl=tls_ctx if a.security == "tls" else None,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if a.exit_on_stdin_eof:
        def wait_eof():
            sys.stdin.buffer.read()
            loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=wait_eof, daemon=True).start()

    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    asyncio.run(serve(parse_args()))
