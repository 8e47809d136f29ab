"""``redact``/``redact_text``/``scrub``: user info goes even when the secret has
``/``, ``+``, ``=`` or ``:`` in it; http keeps RFC parsing; queries and fragments go."""

from __future__ import annotations

import pytest

from ghist_ray.slides.redact import redact, redact_text, scrub

SECRET = "abc/def+ghi=jk:l"  # what AWS secrets (and careless passwords) look like


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        (f"s3://AKIAKEY:{SECRET}@bucket/a.svs", "s3://bucket/a.svs"),
        ("s3://KEY:abc/def@bucket/a.svs", "s3://bucket/a.svs"),
        (f"s3://AKIAKEY:{SECRET}@bucket/a.svs?X-Amz-Signature=1#f", "s3://bucket/a.svs"),
        (f"gs://user:{SECRET}@bucket/dir/a.svs", "gs://bucket/dir/a.svs"),
        (f"gcs://user:{SECRET}@bucket/a", "gcs://bucket/a"),
        (f"az://key:{SECRET}@container/a.svs", "az://container/a.svs"),
        (
            f"abfs://key:{SECRET}@container@acct.dfs.core.windows.net/a",
            "abfs://container@acct.dfs.core.windows.net/a",
        ),
        (
            f"postgresql://ml:{SECRET}@db.internal:5432/mlflow",
            "postgresql://db.internal:5432/mlflow",
        ),
        (f"mysql+pymysql://ml:{SECRET}@db:3306/mlflow?ssl=1", "mysql+pymysql://db:3306/mlflow"),
        ("postgresql://ml:p%2Fw@db/mlflow", "postgresql://db/mlflow"),
        ("s3://KEYONLY@bucket/a.svs", "s3://bucket/a.svs"),
        ("s3://:secret/x@bucket/a.svs", "s3://bucket/a.svs"),
    ],
)
def test_redact_removes_user_info_with_slashes_and_signs(uri: str, shown: str) -> None:
    assert redact(uri) == shown
    assert redact_text(f"error: cannot open '{uri}' (retrying)") == (
        f"error: cannot open '{shown}' (retrying)"
    )
    assert scrub(f"cannot open {uri}\nTraceback …") == f"cannot open {shown}"


@pytest.mark.parametrize(
    "uri",
    [
        "s3://bucket/a.svs",
        "s3://bucket/dir/x:y/z@w/a.svs",  # a key with ':' and '@' is a path, not user info
        "s3://bucket/a@2x.svs",
        "gs://bucket/a/b c ü%.svs",
        "abfs://container@acct.dfs.core.windows.net/a",  # Azure's container, not a user
        "postgresql://db.internal:5432/mlflow",
        "sqlite:////tmp/x/mlflow.db",
        "file:///data/a.svs",
        "models:/ghist/3",
        "runs:/0123abcd/model",
        "databricks://profile:prefix",
        "/data/a?b.svs",
        "relative/a:b@c.svs",
        "C:\\data\\a.svs",
    ],
)
def test_redact_leaves_uris_without_credentials_alone(uri: str) -> None:
    assert redact(uri) == uri


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("http://host:8080/a@b", "http://host:8080/a@b"),  # RFC: a path with '@'
        ("https://Host:8080/a/x.svs?X-Amz-Signature=1", "https://Host:8080/a/x.svs"),
        ("http://user:S3cr3t%2Fx@127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("https://user:pa+ss=@mlflow.example.org/api", "https://mlflow.example.org/api"),
        ("https://u:p@ss@host/x", "https://host/x"),  # RFC: the last '@' of the netloc
        ("http://[::1]:5000/a@b", "http://[::1]:5000/a@b"),
        # Not RFC (the "port" is no number): a secret with '/' that was not encoded.
        ("https://user:pa/ss@host/x", "https://host/x"),
        ("https://user:pa?ss@host/x", "https://host/x"),
    ],
)
def test_redact_http_keeps_rfc_parsing(uri: str, shown: str) -> None:
    assert redact(uri) == shown
    assert scrub(f"GET {uri} failed") == f"GET {shown} failed"


def test_redact_text_every_uri_and_bare_keys() -> None:
    text = (
        '{"out": "s3://K:a/b@bkt/run", "tracking_uri": "http://u:pw@h:5000"}\n'
        "copied from AKIAKEY:abc/def+g=@bucket/a.svs to http://host:8080/a@b\n"
        "at 12:00 nothing else changes"
    )
    assert redact_text(text) == (
        '{"out": "s3://bkt/run", "tracking_uri": "http://h:5000"}\n'
        "copied from bucket/a.svs to http://host:8080/a@b\n"
        "at 12:00 nothing else changes"
    )
    assert scrub("") == ""


def test_redact_text_keeps_model_aliases_and_still_removes_bare_secrets() -> None:
    # "models:/ghist@champion" names a registry alias, not a user "models" with a password.
    text = "models:/ghist@champion: not found; key:secret@bucket/a runs:/abc/model"
    assert redact_text(text) == "models:/ghist@champion: not found; bucket/a runs:/abc/model"
