"""URIs and texts with credentials removed, for messages, logs, MLflow and outputs.

Credentials come from the environment, but users still paste presigned URLs
(``?X-Amz-Signature=…``), ``s3://key:secret@bucket/…`` or a database URI with a
password; none may reach a log line, an error, an MLflow param or an output file.
Everything that shows a URI goes through :func:`redact` (one URI),
:func:`redact_text` (every URI inside a text) or :func:`scrub` (an error's first
line).

User info is found in two ways:

- ``http``/``https`` (and ``ws``/``wss``) follow RFC 3986: a secret there must be
  percent-encoded, so ``http://host:8080/a@b`` is a host, a port and a path;
- every other scheme (``s3``, ``gs``, ``az``, ``abfs``, ``postgresql``,
  ``mysql+pymysql``, …) is read as SQLAlchemy reads database URLs: a user
  without ``:``, ``/`` or ``@``, then ``:`` and a password that runs to the first
  ``@`` (AWS secrets contain ``/``, ``+`` and ``=``, and are not encoded in the
  wild). An http netloc whose "port" is not a number (``user:pa/ss@host``) is
  read this way too.

Query strings and fragments always go (presigned URLs carry their signature there).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_SCHEME = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*")
_RFC_SCHEMES = frozenset({"http", "https", "ws", "wss"})
# Azure: ``abfs://container@account.dfs.core.windows.net/…`` names a container, not a
# user; only user info with a password is removed there.
_CONTAINER_SCHEMES = frozenset({"abfs", "abfss", "az", "adl", "wasb", "wasbs"})
_USERINFO = re.compile(r"[^:/@\s]*(?::[^@\s]*)?@")
_URL = r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>`]*"
_BARE_USERINFO = r"[^\s/'\"@:]+:[^\s'\"@]+@"  # key:secret@bucket, schemeless
# MLflow's model URIs name a registry alias after "@" (``models:/ghist@champion``):
# no credential there, and the bare-userinfo rule must not eat the name.
_MODEL_URI = r"\b(?:models|runs):/[^\s'\"<>`]*"
_IN_TEXT = re.compile(rf"(?P<url>{_URL})|(?P<model>{_MODEL_URI})|{_BARE_USERINFO}")


def _port_is_number(netloc: str) -> bool:
    host = netloc.rsplit("]", 1)[-1]  # what follows an IPv6 literal
    _, colon, port = host.rpartition(":")
    return not colon or port == "" or port.isdigit()


def redact(uri: str) -> str:
    """``uri`` without user info, query string or fragment; local paths unchanged.

    >>> redact("s3://AKIA:abc/d+e=@bucket/a.svs?X-Amz-Signature=1")
    's3://bucket/a.svs'
    >>> redact("http://host:8080/a@b")
    'http://host:8080/a@b'
    """
    scheme, sep, rest = uri.partition("://")
    if not sep or not _SCHEME.fullmatch(scheme):
        return uri
    if scheme.lower() in _RFC_SCHEMES:
        try:
            parts = urlsplit(uri)
        except ValueError:  # a malformed IPv6 literal: fall through to the loose reading
            parts = None
        if parts is not None:
            host = parts.netloc.rpartition("@")[2]  # not .hostname: that lower-cases
            if _port_is_number(host):
                return urlunsplit((parts.scheme, host, parts.path, "", ""))
    found = _USERINFO.match(rest)
    if found and (scheme.lower() not in _CONTAINER_SCHEMES or ":" in found.group()):
        rest = rest[found.end() :]
    return f"{scheme}://{re.split(r'[?#]', rest, maxsplit=1)[0]}"


def redact_text(text: str) -> str:
    """``text`` with every URI in it redacted and schemeless ``key:secret@`` removed."""
    return _IN_TEXT.sub(lambda m: redact(m["url"]) if m["url"] else (m["model"] or ""), text)


def scrub(text: str) -> str:
    """First line of an error text, with any URI inside it redacted."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return redact_text(line)
