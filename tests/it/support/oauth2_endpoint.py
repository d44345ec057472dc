#!/usr/bin/env python3
"""OAuth2 token endpoint for envoi's tests (RFC 6749 §3.2, §4.4, §5, §6), python3 stdlib only.

Serves POST /token over HTTPS on 127.0.0.1 (--cert/--key), prints `READY <port>` once listening.
Accepts only application/x-www-form-urlencoded bodies with each parameter at most once (§3.2).
Client authentication (§2.3.1): client_id and client_secret in the body, or HTTP Basic.
  grant_type=client_credentials  needs the right client secret, else 401 invalid_client.
  grant_type=refresh_token       needs the current refresh token (--refresh-token at first); each
                                 success rotates it (a new one is returned, the old one is then
                                 refused with 400 invalid_grant). The client secret is checked
                                 when the client sends one or --secret-required is given.
Access tokens are PREFIX1, PREFIX2, ... (--token-prefix) in the order issued, each with
expires_in = --expires-in. Answers carry Cache-Control: no-store (§5.1).
Every request is appended to OUT/requests.jsonl as one JSON line:
    {"path", "grant_type", "client_id", "secret_ok", "refresh_token", "scope", "status",
     "error", "access_token", "new_refresh_token"}
With --fail-status N every request is answered N with a plain-text body (a broken endpoint).
Consent, for `envoi auth login`:
  POST /devicecode (RFC 8628 §3.1) answers a device code, user code WDJB-MJHT and interval 1;
  grant_type=urn:ietf:params:oauth:grant-type:device_code answers authorization_pending for the
  first --device-pending polls, then tokens with the refresh token rt-login-1 (which from then on
  is the current refresh token).
  grant_type=authorization_code (RFC 6749 §4.1.3, RFC 7636) needs code = --auth-code and a
  redirect_uri; it logs code_verifier and redirect_uri so a test can check the PKCE challenge,
  and answers tokens with the refresh token rt-login-1.
Stops on SIGTERM or SIGINT, and with --exit-on-stdin-eof when stdin closes (the parent died).
"""
import argparse
import base64
import http.server
import json
import os
import signal
import ssl
import sys
import threading
import urllib.parse


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--cert", required=True, help="PEM: leaf certificate, then its CA")
    p.add_argument("--key", required=True, help="PEM private key")
    p.add_argument("--out", required=True, help="directory for requests.jsonl")
    p.add_argument("--client-id", required=True)
    p.add_argument("--client-secret", required=True)
    p.add_argument("--secret-required", action="store_true",
                   help="refresh_token grants need the client secret too")
    p.add_argument("--refresh-token", help="the first valid refresh token")
    p.add_argument("--token-prefix", default="at-")
    p.add_argument("--expires-in", type=int, default=3600)
    p.add_argument("--fail-status", type=int)
    p.add_argument("--device-pending", type=int, default=1)
    p.add_argument("--auth-code", default="code-canary-1")
    p.add_argument("--exit-on-stdin-eof", action="store_true")
    return p.parse_args()


class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.issued = 0
        self.refresh_token = args.refresh_token
        self.rotations = 0
        self.polls = 0

    def log(self, record):
        with open(os.path.join(self.args.out, "requests.jsonl"), "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state = None  # set in main

    def log_message(self, *args):
        pass

    def answer(self, status, body, record, content_type="application/json;charset=UTF-8",
               headers=()):
        data = body.encode("utf-8") if isinstance(body, str) else json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Pragma", "no-cache")
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        record["status"] = status
        if isinstance(body, dict) and "error" in body:
            record["error"] = body["error"]
        self.state.log(record)

    def error(self, status, code, description, record, headers=()):
        self.answer(status, {"error": code, "error_description": description}, record,
                    headers=headers)

    def do_GET(self):
        self.answer(405, "use POST", {"path": self.path}, content_type="text/plain")

    def do_POST(self):
        st, a = self.state, self.state.args
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8", "replace")
        record = {"path": self.path}
        if a.fail_status:
            return self.answer(a.fail_status, "the endpoint is down", record,
                               content_type="text/plain")
        if self.path not in ("/token", "/devicecode"):
            return self.answer(404, "no such endpoint", record, content_type="text/plain")
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return self.error(400, "invalid_request", f"Content-Type {ctype!r} is not a form",
                              record)
        pairs = urllib.parse.parse_qsl(raw, keep_blank_values=True, strict_parsing=bool(raw))
        params = {}
        for k, v in pairs:
            if k in params:
                return self.error(400, "invalid_request", f"{k} given twice", record)
            params[k] = v
        client_id, secret = params.get("client_id"), params.get("client_secret")
        basic = self.headers.get("Authorization")
        if basic and basic.startswith("Basic "):
            user, _, pw = base64.b64decode(basic[6:]).decode().partition(":")
            client_id, secret = urllib.parse.unquote_plus(user), urllib.parse.unquote_plus(pw)
        if self.path == "/devicecode":
            record.update(client_id=client_id, scope=params.get("scope"))
            if client_id != a.client_id:
                return self.error(400, "invalid_client", "unknown client", record)
            return self.answer(200, {
                "device_code": "dc-canary-1", "user_code": "WDJB-MJHT",
                "verification_uri": "https://login.example.test/device",
                "expires_in": 900, "interval": 1,
                "message": "To sign in, use a web browser to open the page "
                           "https://login.example.test/device and enter the code WDJB-MJHT."},
                record)
        grant = params.get("grant_type")
        record.update(code_verifier=params.get("code_verifier"),
                      redirect_uri=params.get("redirect_uri"), device_code=params.get("device_code"))
        record.update(grant_type=grant, client_id=client_id, secret_ok=None,
                      refresh_token=params.get("refresh_token"), scope=params.get("scope"))
        if client_id != a.client_id:
            return self.error(401, "invalid_client",
                              f"AADSTS700016: Application with identifier '{client_id}' "
                              "was not found in the directory.", record,
                              headers=[("WWW-Authenticate", "Basic")])
        if secret is not None or grant == "client_credentials" or a.secret_required:
            record["secret_ok"] = secret == a.client_secret
            if not record["secret_ok"]:
                return self.error(401, "invalid_client",
                                  "AADSTS7000215: Invalid client secret provided. Ensure the "
                                  "secret being sent in the request is the client secret value.",
                                  record, headers=[("WWW-Authenticate", "Basic")])
        with st.lock:
            new_refresh = None
            if grant == "client_credentials":
                pass
            elif grant == "urn:ietf:params:oauth:grant-type:device_code":
                if params.get("device_code") != "dc-canary-1":
                    return self.error(400, "invalid_grant", "unknown device_code", record)
                st.polls += 1
                if st.polls <= a.device_pending:
                    return self.error(400, "authorization_pending",
                                      "AADSTS70016: OAuth 2.0 device flow error. Authorization "
                                      "is pending. Continue polling.", record)
                new_refresh = st.refresh_token = "rt-login-1"
            elif grant == "authorization_code":
                if params.get("code") != a.auth_code or not params.get("redirect_uri"):
                    return self.error(400, "invalid_grant", "bad code or redirect_uri", record)
                if not params.get("code_verifier"):
                    return self.error(400, "invalid_request", "code_verifier is missing", record)
                new_refresh = st.refresh_token = "rt-login-1"
            elif grant == "refresh_token":
                presented = params.get("refresh_token")
                if not presented:
                    return self.error(400, "invalid_request", "refresh_token is missing", record)
                if presented != st.refresh_token:
                    return self.error(400, "invalid_grant",
                                      "AADSTS70000: The provided value for the 'refresh_token' "
                                      "is not valid: it was already used or revoked.", record)
                st.rotations += 1
                new_refresh = f"rt-rotated-{st.rotations}"
                st.refresh_token = new_refresh
            else:
                return self.error(400, "unsupported_grant_type",
                                  f"grant_type {grant!r} is not supported", record)
            st.issued += 1
            access = f"{a.token_prefix}{st.issued}"
        body = {"access_token": access, "token_type": "Bearer", "expires_in": a.expires_in}
        if new_refresh:
            body["refresh_token"] = new_refresh
        if params.get("scope"):
            body["scope"] = params["scope"]
        record.update(access_token=access, new_refresh_token=new_refresh)
        self.answer(200, body, record)


def main():
    a = parse_args()
    os.makedirs(a.out, exist_ok=True)
    Handler.state = State(a)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    server.daemon_threads = True
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
