"""What every answer and every request body goes through, whatever the blueprint.

Headers: a Content-Security-Policy that lets a page run only its own files and the inline <style>
and <script> blocks carrying this request's nonce (templates write `nonce="{{ csp_nonce() }}"`),
nosniff, no framing, a same-origin referrer, and `Cache-Control: no-store` on everything that is
not a static file and whose view chose no rule of its own (pages and the API carry personal
data; a photo or a diagram is `private` and revalidated or short-lived: webapp/photos.py,
webapp/inbox.py). Cookies are SameSite=Lax and HttpOnly, and Secure behind TLS
(GRIDLOOP_SECURE_COOKIES=1). GRIDLOOP_TRUSTED_PROXIES=N trusts N reverse proxies'
X-Forwarded-For and X-Forwarded-Proto, so per-address sign-in limits see the client; by default
no proxy is trusted. Request bodies are bounded (MAX_CONTENT_LENGTH, 1 MiB by default: 413 before
the body is read; a photo upload raises it for itself), and a JSON body is read by `json_body`,
which refuses with a 400 what is not UTF-8 JSON, nests too deeply or holds lone surrogates.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping

from flask import Flask, Response, g, has_request_context, request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.middleware.proxy_fix import ProxyFix

from engine.errors import Invalid

MAX_BODY = 1024 * 1024  # bytes; MAX_CONTENT_LENGTH unless configured
MAX_JSON_DEPTH = 32  # arrays and objects inside each other; forms are flat
TRUE = {"1", "true", "yes", "on"}

# bpmn-js positions its overlays and sizes its canvas through element.style (CSSOM), which a CSP
# does not restrict; nothing here allows inline style attributes or eval.
PAGE_POLICY = (
    "default-src 'self'",
    "script-src 'self'{nonce}",
    "style-src 'self'{nonce}",
    "img-src 'self' data:",
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
)
# For a file to be downloaded (the BPMN XML): nothing in it runs, even when opened directly.
DOWNLOAD_POLICY = "default-src 'none'; sandbox; frame-ancestors 'none'"


def defaults(environ: Mapping[str, str]) -> dict:
    """The configuration this module reads, from the environment; create_app's `config` wins."""
    secure = environ.get("GRIDLOOP_SECURE_COOKIES", "").strip().lower() in TRUE
    return {
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SECURE": secure,
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        "REMEMBER_COOKIE_HTTPONLY": True,
        "REMEMBER_COOKIE_SECURE": secure,
        "MAX_CONTENT_LENGTH": MAX_BODY,
        "GRIDLOOP_TRUSTED_PROXIES": _count(environ.get("GRIDLOOP_TRUSTED_PROXIES")),
    }


def _count(value: str | None) -> int:
    text = (value or "").strip()
    if not text:
        return 0
    if not text.isdigit():
        raise ValueError(f"GRIDLOOP_TRUSTED_PROXIES must be a number of proxies, not {value!r}")
    return int(text)


def init_app(app: Flask) -> None:
    proxies = int(app.config.get("GRIDLOOP_TRUSTED_PROXIES") or 0)
    if proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies)  # type: ignore[method-assign]
    app.jinja_env.globals["csp_nonce"] = csp_nonce
    app.before_request(refuse_nul)
    app.after_request(secure_headers)


def refuse_nul() -> None:
    """A NUL character in the path, the query or a plain form is refused (400) before any view
    runs: no database text column holds one (PostgreSQL fails the statement), and no name,
    number or comment a person types contains one. Multipart bodies (uploads) are left to their
    views, which check who is asking before reading them; JSON bodies to json_body."""
    fields = [request.path, *request.args.keys(), *request.args.values()]
    if request.mimetype == "application/x-www-form-urlencoded":
        fields += [*request.form.keys(), *request.form.values()]
    if any("\x00" in text for text in fields):
        raise Invalid("the request holds a NUL character", {"request": "holds a NUL character"})


def csp_nonce() -> str:
    """This request's nonce for inline <style> and <script> blocks (made on first use)."""
    if not has_request_context():
        return ""
    nonce = g.get("csp_nonce")
    if nonce is None:
        nonce = g.csp_nonce = secrets.token_urlsafe(18)
    return nonce


def page_policy(nonce: str | None) -> str:
    return "; ".join(PAGE_POLICY).format(nonce=f" 'nonce-{nonce}'" if nonce else "")


def secure_headers(response: Response) -> Response:
    headers = response.headers
    if "Content-Security-Policy" not in headers:
        headers["Content-Security-Policy"] = page_policy(g.get("csp_nonce"))
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"
    headers.setdefault("Referrer-Policy", "same-origin")
    if request.endpoint != "static":  # unless a view chose its own (a photo, a diagram)
        headers.setdefault("Cache-Control", "no-store")
    return response


def download(response: Response, filename: str) -> Response:
    """Make a response a download that no browser renders or runs: nosniff, a sandboxing CSP
    and Content-Disposition: attachment (fetch() ignores the latter)."""
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = DOWNLOAD_POLICY
    response.headers.set("Content-Disposition", "attachment", filename=filename)
    return response


# ------------------------------------------------------------------ JSON bodies

SURROGATE = re.compile("[\ud800-\udfff]")


def json_body() -> object:
    """The request's JSON body. Invalid (400) unless it is application/json, UTF-8, parses,
    nests at most MAX_JSON_DEPTH deep and holds no lone surrogate (which no database stores);
    a body over MAX_CONTENT_LENGTH is refused with 413 before it is read."""
    if not request.is_json:
        raise _bad("the body must be JSON (Content-Type: application/json)")
    data = request.get_data(cache=True)  # 413 here, from Content-Length alone
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(data) >= limit:
        # A body streamed without a length (chunked) is cut at the limit, not refused.
        raise RequestEntityTooLarge()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad("the body is not UTF-8") from None
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise _bad(f"the body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError:
        raise _bad("the body is not valid JSON") from None
    _check_shape(value)
    return value


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _check_shape(value: object) -> None:
    stack: list[tuple[object, int, str]] = [(value, 1, "")]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, str):
            if SURROGATE.search(item):
                raise _bad("the body holds a lone surrogate (\\ud800-\\udfff)")
            if "\x00" in item:  # no database text column holds one: named where it is
                raise Invalid("the body holds a NUL character", {path or "body": "holds a NUL"})
            continue
        if not isinstance(item, dict | list):
            continue
        if depth > MAX_JSON_DEPTH:
            raise _bad(f"the body nests deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(item, dict):
            for key, child in item.items():
                where = f"{path}.{key}" if path else str(key)
                stack.append((key, depth, where))
                stack.append((child, depth + 1, where))
        else:
            stack.extend((child, depth + 1, f"{path}[{i}]") for i, child in enumerate(item))


def _bad(message: str) -> Invalid:
    return Invalid(message, {"body": message})
