"""Slide URIs and error texts with credentials removed, for messages and logs.

Credentials come from the environment, but users still paste presigned URLs
(``?X-Amz-Signature=…``) or ``s3://key:secret@bucket/…`` into manifests; neither
may reach a log line, an error or an output table.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_USERINFO = re.compile(r"(\b[a-zA-Z][\w+.-]*://)[^/@\s]*@")
_BARE_USERINFO = re.compile(r"[^\s/'\"@:]+:[^\s/'\"@]+@")  # key:secret@bucket, schemeless
_QUERY = re.compile(r"(\b[a-zA-Z][\w+.-]*://[^\s?#'\"]*)[?#][^\s'\"]*")


def redact(uri: str) -> str:
    """``uri`` without user info, query string or fragment; local paths unchanged."""
    if "://" not in uri:
        return uri
    parts = urlsplit(uri)
    host = parts.netloc.rpartition("@")[2]  # not .hostname: that lower-cases
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def scrub(text: str) -> str:
    """First line of an error text, with any URL inside it redacted."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    line = _BARE_USERINFO.sub("", _USERINFO.sub(r"\1", line))
    return _QUERY.sub(r"\1", line)
