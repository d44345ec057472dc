#!/usr/bin/env python3
"""Microsoft Graph sendMail and Gmail API messages.send on loopback, for envoi's tests. python3
stdlib only.

Serves HTTPS on 127.0.0.1 (--cert/--key from the tests' CA; --plain: HTTP), prints `READY <port>` once
listening. Both services on one server: Graph under --graph-base (default /v1.0, so envoi's
api_url is https://127.0.0.1:PORT/v1.0), Gmail at the root (api_url https://127.0.0.1:PORT).
Each rule below follows a published page (found with the `search` tool):

Microsoft Graph, user: sendMail, MIME form
  (https://learn.microsoft.com/en-us/graph/api/user-sendmail, v1.0;
   https://learn.microsoft.com/en-us/graph/outlook-send-mime-message)
  POST {base}/users/{id | userPrincipalName}/sendMail; `Authorization: Bearer {token}` required;
  `Content-Type: text/plain` for MIME content; the body is the whole MIME message as a base64
  string. Success: 202 Accepted and nothing in the body. Malformed base64: 400 "Invalid base64
  string for MIME content." (code ErrorMimeContentInvalidBase64String). The MIME form saves to
  Sent Items ("This method saves the message in the Sent Items folder"); saveToSentItems is a
  parameter of the JSON form only.
  Errors (https://learn.microsoft.com/graph/errors): standard statuses and a JSON body
  {"error": {"code", "message", "innerError": {"date", "request-id", "client-request-id"}}};
  413 when the request is over the limit, about 4 MB for this API (Microsoft Q&A "Graph API -
  user: sendMail - Request size limit", pointing at /graph/use-the-api): --graph-max-bytes,
  default 4 MiB of request body. 429 and 503 carry Retry-After
  (https://learn.microsoft.com/graph/throttling). Every answer carries `request-id` and
  `client-request-id` (the client's own, echoed, or a new one).
  Not on that page, chosen here and kept close to Exchange Online's behaviour: an unknown
  mailbox (not a --mailbox) is 404 ErrorInvalidUser; a Content-Type other than text/plain is 415
  UnsupportedMediaType (Graph's status table); a decoded message without one To/Cc/Bcc address
  is 400 ErrorInvalidRecipients.
Microsoft Graph, Get mailboxSettings (https://learn.microsoft.com/en-us/graph/api/
  user-get-mailboxsettings): GET {base}/users/{mailbox}/mailboxSettings answers the
  mailboxSettings JSON; with --settings-denied it is 403 ErrorAccessDenied (the app has
  Mail.Send but not MailboxSettings.Read).

Gmail API, users.messages.send
  (https://developers.google.com/gmail/api/guides/sending,
   https://developers.google.com/gmail/api/guides/uploads)
  POST /gmail/v1/users/{userId}/messages/send, userId `me` or the user's address
  (--gmail-address); `Content-Type: application/json`, body {"raw": "<base64url RFC 2822
  message>"} ("encode it as a base64url string": '+' and '/' are refused, '=' padding optional);
  or the media upload URI POST /upload/gmail/v1/users/{userId}/messages/send?uploadType=media
  with `Content-Type: message/rfc822` and the message's own bytes (uploadType=media is the
  "simple upload"; the other upload types are refused here). Maximum size 35 MB
  (--gmail-max-bytes, default 36700160 bytes of message); over it: 400 "Request payload size
  exceeds the limit". Success: 200 with the Message resource {"id", "threadId", "labelIds":
  ["SENT"]}.
  Errors (https://developers.google.com/gmail/api/guides/handle-errors): {"error": {"code":
  <status>, "message", "errors": [{"message", "domain": "global", "reason"}], "status"}}: 400
  INVALID_ARGUMENT (invalidArgument, e.g. "Recipient address required"), 401 UNAUTHENTICATED
  (authError, with WWW-Authenticate: Bearer), 403 PERMISSION_DENIED (insufficientPermissions),
  429 RESOURCE_EXHAUSTED (rateLimitExceeded), 500 INTERNAL / 503 UNAVAILABLE (backendError).
Gmail API, users.getProfile (https://developers.google.com/gmail/api/reference/rest/v1/users/
  getProfile): GET /gmail/v1/users/{userId}/profile answers {"emailAddress", "messagesTotal",
  "threadsTotal", "historyId"}; with --profile-denied 403 insufficientPermissions (a token with
  only the gmail.send scope, which getProfile does not accept).

Tokens: only the --token values (repeatable) are accepted; any other bearer token, or none, is
401 with the service's error JSON. Request bodies are read whole (Content-Length or chunked), at
most 64 MiB, before any answer.

Every request is appended to OUT/requests.jsonl as one JSON line, before it is answered:
    {"seq", "method", "path", "query", "api": "graph"|"gmail"|null, "op": "sendMail"|
     "mailboxSettings"|"send"|"upload"|"profile"|null, "user", "token", "content_type",
     "content_length", "chunked", "client_request_id", "status" (null: not answered),
     "error_code" (Graph's code or Gmail's reason), "answer": "normal"|"hang"|"drip"|"huge",
     "service_id" (Graph's request-id, Gmail's message id), "message_file" (OUT/msg-SEQ.eml, the
     decoded message bytes, when they decoded), "recipients" (To, Cc, Bcc addresses)}
Fault knobs, applied to requests that reached a known endpoint, after the body is read and
recorded (so the message is saved even when refused):
  --fail-status S [--fail-first N] [--fail-code C] [--fail-message M] [--retry-after SECS]
      answer the first N such requests (default: all) with status S and the service's error
      JSON (code C, or the service's usual one for S), with Retry-After when given.
  --stall hang|drip|huge [--stall-first N]
      hang: read and record the request, then never answer (the connection stays open);
      drip: send the answer one byte a second; huge: the answer's body is --huge-bytes long
      (an error JSON with a long message; Content-Length says so), written until the client
      stops reading; the count of body bytes written then goes to OUT/written-SEQ.
Stops on SIGTERM or SIGINT, and with --exit-on-stdin-eof when stdin closes (the parent died).
"""
import argparse
import base64
import binascii
import datetime
import email
import email.policy
import email.utils
import hashlib
import http.server
import json
import os
import re
import signal
import ssl
import sys
import threading
import time
import urllib.parse
import uuid

MAX_BODY = 64 * 1024 * 1024
B64_STD = re.compile(rb"\A[A-Za-z0-9+/]*={0,2}\Z")
B64_URL = re.compile(rb"\A[A-Za-z0-9_-]*={0,2}\Z")

GRAPH_DEFAULTS = {
    400: ("ErrorInvalidRecipients", "At least one recipient is not valid."),
    401: ("InvalidAuthenticationToken", "Access token validation failure."),
    403: ("ErrorAccessDenied", "Access is denied. Check credentials and try again."),
    404: ("ErrorInvalidUser", "The requested user is invalid."),
    413: ("ErrorMessageSizeExceeded", "The message exceeds the maximum supported size."),
    429: ("ApplicationThrottled", "Application is over its MailboxConcurrency limit."),
    500: ("InternalServerError", "An internal server error occurred."),
    503: ("ServiceUnavailable", "The service is temporarily unavailable."),
}
GRAPH_MESSAGES = {
    "MailboxNotEnabledForRESTAPI":
        "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
    "ErrorSendAsDenied": "The user account which was used to submit this request does not have "
                         "the right to send mail on behalf of the specified sending account.",
    "ResourceNotFound": "Resource could not be discovered.",
}
GMAIL_DEFAULTS = {
    400: ("INVALID_ARGUMENT", "invalidArgument", "Invalid argument"),
    401: ("UNAUTHENTICATED", "authError",
          "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
          "cookie or other valid authentication credential."),
    403: ("PERMISSION_DENIED", "insufficientPermissions",
          "Request had insufficient authentication scopes."),
    404: ("NOT_FOUND", "notFound", "Requested entity was not found."),
    429: ("RESOURCE_EXHAUSTED", "rateLimitExceeded", "Too many concurrent requests for user."),
    500: ("INTERNAL", "backendError", "Backend Error"),
    503: ("UNAVAILABLE", "backendError", "The service is currently unavailable."),
}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--cert", required=True, help="PEM: leaf certificate, then its CA")
    p.add_argument("--key", required=True, help="PEM private key")
    p.add_argument("--out", required=True, help="directory for requests.jsonl and messages")
    p.add_argument("--token", action="append", default=[], help="an accepted bearer token")
    p.add_argument("--mailbox", action="append", default=[], help="a Graph mailbox that exists")
    p.add_argument("--gmail-address", default="me@gmail.example")
    p.add_argument("--graph-base", default="/v1.0")
    p.add_argument("--graph-max-bytes", type=int, default=4 * 1024 * 1024)
    p.add_argument("--gmail-max-bytes", type=int, default=36700160)
    p.add_argument("--settings-denied", action="store_true")
    p.add_argument("--profile-denied", action="store_true")
    p.add_argument("--fail-status", type=int)
    p.add_argument("--fail-first", type=int)
    p.add_argument("--fail-code")
    p.add_argument("--fail-message")
    p.add_argument("--retry-after")
    p.add_argument("--stall", choices=["hang", "drip", "huge"])
    p.add_argument("--stall-first", type=int)
    p.add_argument("--huge-bytes", type=int, default=1 << 30)
    p.add_argument("--plain", action="store_true",
                   help="plain HTTP, no TLS (api_url=http:// is allowed to loopback only)")
    p.add_argument("--exit-on-stdin-eof", action="store_true")
    return p.parse_args()


class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.seq = 0
        self.faulted = 0
        self.stalled = 0
        self.forever = threading.Event()  # never set: a hung answer waits on it

    def next_seq(self):
        with self.lock:
            self.seq += 1
            return self.seq

    def take(self, counter, limit):
        """Whether this request gets the knob: true for the first `limit` (None: all)."""
        with self.lock:
            if limit is not None and getattr(self, counter) >= limit:
                return False
            setattr(self, counter, getattr(self, counter) + 1)
            return True

    def log(self, record):
        line = json.dumps(record) + "\n"
        with self.lock:
            with open(os.path.join(self.args.out, "requests.jsonl"), "a", encoding="utf-8") as f:
                f.write(line)


class Refusal(Exception):
    """An answer other than success: status, the service's code/reason, message."""

    def __init__(self, status, code=None, message=None, fault=False):
        super().__init__(message)
        self.status, self.code, self.message, self.fault = status, code, message, fault


def recipients_of(msg):
    headers = []
    for name in ("To", "Cc", "Bcc"):
        headers.extend(str(v) for v in msg.get_all(name, []))
    return [addr for _, addr in email.utils.getaddresses(headers) if "@" in addr]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY, as a real front end sets it: without it the answer's header and body
    # writes meet the client's delayed ACK, a ~40 ms stall that bench scenario 7 would
    # measure instead of the clients.
    disable_nagle_algorithm = True
    state = None  # set in main

    def log_message(self, *args):
        pass

    # ------------------------------------------------------------------ reading

    def read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            body = bytearray()
            while True:
                size_line = self.rfile.readline(1024)
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(body), True
                if len(body) + size > MAX_BODY:
                    raise Refusal(413)
                body += self.rfile.read(size)
                self.rfile.readline(1024)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise Refusal(413)
        return self.rfile.read(length), False

    # ------------------------------------------------------------------ routing

    def route(self):
        """(api, op, user) for a known endpoint, else (None, None, None)."""
        a = self.state.args
        path = self.url.path
        base = a.graph_base.rstrip("/")
        m = re.fullmatch(re.escape(base) + r"/users/([^/]+)/(sendMail|mailboxSettings)", path)
        if m:
            return "graph", m.group(2), urllib.parse.unquote(m.group(1))
        m = re.fullmatch(r"/gmail/v1/users/([^/]+)/(messages/send|profile)", path)
        if m:
            op = "send" if m.group(2) == "messages/send" else "profile"
            return "gmail", op, urllib.parse.unquote(m.group(1))
        m = re.fullmatch(r"/upload/gmail/v1/users/([^/]+)/messages/send", path)
        if m:
            return "gmail", "upload", urllib.parse.unquote(m.group(1))
        return None, None, None

    def handle_any(self):
        st, a = self.state, self.state.args
        self.url = urllib.parse.urlsplit(self.path)
        seq = st.next_seq()
        api, op, user = self.route()
        auth = self.headers.get("Authorization") or ""
        token = auth[7:] if auth[:7].lower() == "bearer " else None
        rec = {
            "seq": seq, "method": self.command, "path": self.url.path, "query": self.url.query,
            "api": api, "op": op, "user": user, "token": token,
            "content_type": self.headers.get("Content-Type"),
            "content_length": self.headers.get("Content-Length"),
            "chunked": False, "client_request_id": self.headers.get("client-request-id"),
            "status": None, "error_code": None, "answer": "normal", "service_id": None,
            "message_file": None, "recipients": None,
        }
        self.api, self.rec, self.seq = api, rec, seq
        self.request_id = str(uuid.uuid4())
        try:
            body, rec["chunked"] = self.read_body()
        except (Refusal, ValueError):
            self.close_connection = True
            return self.refuse(Refusal(413, None, "request body too large or malformed"))
        try:
            if api is None:
                raise Refusal(404, None, "no such endpoint")
            want = "GET" if op in ("mailboxSettings", "profile") else "POST"
            if self.command != want:
                raise Refusal(405, None, f"{op} takes {want}")
            message = self.decode_message(op, body)
            if message is not None:
                self.save(message)
            if st.args.fail_status and st.take("faulted", a.fail_first):
                raise Refusal(a.fail_status, a.fail_code, a.fail_message, fault=True)
            if token is None or token not in a.token:
                raise Refusal(401)
            if api == "graph":
                return self.graph(op, user, body, message)
            return self.gmail(op, user, message)
        except Refusal as r:
            return self.refuse(r)

    do_GET = handle_any
    do_POST = handle_any
    do_PUT = handle_any
    do_DELETE = handle_any

    # ------------------------------------------------------------------ decoding

    def decode_message(self, op, body):
        """The message bytes carried by a send request, or None when they do not decode (the
        checks in graph()/gmail() then refuse it)."""
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        try:
            if op == "sendMail" and ctype == "text/plain":
                text = body.strip(b"\r\n")
                if not text or not B64_STD.match(text) or len(text) % 4:
                    return None
                return base64.b64decode(text, validate=True)
            if op == "send" and ctype == "application/json":
                raw = json.loads(body).get("raw")
                if not isinstance(raw, str) or not raw or not B64_URL.match(raw.encode()):
                    return None
                return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
            if op == "upload" and ctype == "message/rfc822":
                return body
        except (ValueError, binascii.Error, AttributeError):
            return None
        return None

    def save(self, message):
        name = f"msg-{self.seq}.eml"
        with open(os.path.join(self.state.args.out, name), "wb") as f:
            f.write(message)
        self.rec["message_file"] = name
        self.rec["message_sha256"] = hashlib.sha256(message).hexdigest()
        parsed = email.message_from_bytes(message, policy=email.policy.compat32)
        self.rec["recipients"] = recipients_of(parsed)

    # ------------------------------------------------------------------ Graph

    def graph(self, op, user, body, message):
        a = self.state.args
        if user.lower() not in (m.lower() for m in a.mailbox):
            raise Refusal(404, "ErrorInvalidUser", f"The requested user '{user}' is invalid.")
        if op == "mailboxSettings":
            if a.settings_denied:
                raise Refusal(403, "ErrorAccessDenied",
                              "Access is denied. Check credentials and try again.")
            return self.answer(200, {
                "@odata.context": f"https://graph.microsoft.com/v1.0/$metadata#users('{user}')"
                                  "/mailboxSettings",
                "timeZone": "UTC", "language": {"locale": "en-US", "displayName": "English"},
                "userPurpose": "user", "dateFormat": "yyyy-MM-dd", "timeFormat": "HH:mm"})
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "text/plain":
            raise Refusal(415, "UnsupportedMediaType",
                          f"Content-Type '{ctype}' is not supported: text/plain (MIME) or "
                          "application/json.")
        if len(body) > a.graph_max_bytes:
            raise Refusal(413)
        if message is None:
            raise Refusal(400, "ErrorMimeContentInvalidBase64String",
                          "Invalid base64 string for MIME content.")
        if not self.rec["recipients"]:
            raise Refusal(400, "ErrorInvalidRecipients",
                          "At least one recipient is required, but none were found.")
        self.rec["service_id"] = self.request_id
        return self.answer(202, None)

    # ------------------------------------------------------------------ Gmail

    def gmail(self, op, user, message):
        a = self.state.args
        if user != "me" and user.lower() != a.gmail_address.lower():
            raise Refusal(403, "forbidden", "Delegation denied for " + a.gmail_address)
        if op == "profile":
            if a.profile_denied:
                raise Refusal(403)
            return self.answer(200, {"emailAddress": a.gmail_address, "messagesTotal": 42,
                                     "threadsTotal": 17, "historyId": "1234567"})
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if op == "upload":
            query = urllib.parse.parse_qs(self.url.query)
            if query.get("uploadType") != ["media"]:
                raise Refusal(400, "invalidArgument", "uploadType must be media here")
            if ctype != "message/rfc822":
                raise Refusal(400, "badContent",
                              f"Media type '{ctype}' is not supported. Valid media types: "
                              "[message/*]")
        elif ctype != "application/json":
            raise Refusal(400, "invalidArgument",
                          f"Invalid JSON payload received: Content-Type {ctype!r}")
        elif message is None:
            raise Refusal(400, "invalidArgument",
                          "Invalid value at 'message.raw' (TYPE_BYTES), Base64 decoding failed")
        if len(message) > a.gmail_max_bytes:
            raise Refusal(400, "badRequest",
                          f"Request payload size exceeds the limit: {a.gmail_max_bytes} bytes.")
        if not self.rec["recipients"]:
            raise Refusal(400, "invalidArgument", "Recipient address required")
        msg_id = hashlib.sha256(message).hexdigest()[:16]
        self.rec["service_id"] = msg_id
        return self.answer(200, {"id": msg_id, "threadId": msg_id, "labelIds": ["SENT"]})

    # ------------------------------------------------------------------ answering

    def refuse(self, r):
        a = self.state.args
        status = r.status
        headers = []
        if a.retry_after and r.fault:
            headers.append(("Retry-After", a.retry_after))
        if self.api == "gmail":
            kind, reason, message = GMAIL_DEFAULTS.get(status, ("UNKNOWN", "unknown", "Error"))
            reason, message = r.code or reason, r.message or message
            body = {"error": {"code": status, "message": message,
                              "errors": [{"message": message, "domain": "global",
                                          "reason": reason}],
                              "status": kind}}
            if status == 401:
                headers.append(("WWW-Authenticate", 'Bearer realm="https://accounts.google.com/",'
                                                    ' error="invalid_token"'))
        elif self.api == "graph":
            code, message = GRAPH_DEFAULTS.get(status, ("UnknownError", "Error"))
            reason = r.code or code
            message = r.message or GRAPH_MESSAGES.get(reason) or message
            body = {"error": {"code": reason, "message": message,
                              "innerError": {"date": datetime.datetime.utcnow().strftime(
                                  "%Y-%m-%dT%H:%M:%S"), "request-id": self.request_id,
                                  "client-request-id": self.client_request_id()}}}
            if status == 401:
                headers.append(("WWW-Authenticate", 'Bearer realm="", '
                                'authorization_uri="https://login.microsoftonline.com/'
                                'common/oauth2/authorize", client_id="00000003-0000-0000-'
                                'c000-000000000000"'))
        else:
            return self.answer(status, r.message or "error", content_type="text/plain")
        self.rec["error_code"] = body["error"]["errors"][0]["reason"] \
            if self.api == "gmail" else body["error"]["code"]
        return self.answer(status, body, headers=headers)

    def client_request_id(self):
        return self.headers.get("client-request-id") or self.request_id

    def answer(self, status, body, headers=(), content_type="application/json; charset=utf-8"):
        st, a = self.state, self.state.args
        if body is None:
            data = b""
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = json.dumps(body).encode()
        head = [f"HTTP/1.1 {status} {self.responses.get(status, ('Status',))[0]}",
                f"Date: {self.date_time_string()}"]
        if self.api == "graph":
            head += [f"request-id: {self.request_id}",
                     f"client-request-id: {self.client_request_id()}",
                     "Cache-Control: private"]
        head += [f"{k}: {v}" for k, v in headers]
        mode = a.stall if a.stall and st.take("stalled", a.stall_first) else "normal"
        self.rec["status"] = None if mode == "hang" else status
        self.rec["answer"] = mode
        if mode == "huge":
            code = f'"{status}"' if self.api == "graph" else str(status)
            prefix = f'{{"error": {{"code": {code}, "message": "'.encode()
            suffix = b'"}}'
            total = max(a.huge_bytes, len(prefix) + len(suffix))
            head += [f"Content-Type: {content_type}", f"Content-Length: {total}"]
        elif data or status != 202:
            head += [f"Content-Type: {content_type}", f"Content-Length: {len(data)}"]
        else:
            head += ["Content-Length: 0"]
        raw_head = ("\r\n".join(head) + "\r\n\r\n").encode()
        st.log(self.rec)
        try:
            if mode == "hang":
                self.close_connection = True
                st.forever.wait()
            elif mode == "drip":
                self.close_connection = True
                for i in range(len(raw_head + data)):
                    self.wfile.write((raw_head + data)[i:i + 1])
                    self.wfile.flush()
                    time.sleep(1)
            elif mode == "huge":
                self.close_connection = True
                self.wfile.write(raw_head + prefix)
                written, filler = len(prefix), b"x" * 65536
                try:
                    while written < total - len(suffix):
                        n = min(len(filler), total - len(suffix) - written)
                        self.wfile.write(filler[:n])
                        written += n
                    self.wfile.write(suffix)
                    written += len(suffix)
                finally:
                    with open(os.path.join(a.out, f"written-{self.seq}"), "w") as f:
                        f.write(str(written))
            else:
                self.wfile.write(raw_head + data)
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            self.close_connection = True


def main():
    a = parse_args()
    os.makedirs(a.out, exist_ok=True)
    Handler.state = State(a)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    server.daemon_threads = True
    if not a.plain:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.cert, a.key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)

    def stop(*_):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if a.exit_on_stdin_eof:
        def wait_eof():
            sys.stdin.buffer.read()
            stop()

        threading.Thread(target=wait_eof, daemon=True).start()
    print(f"READY {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
