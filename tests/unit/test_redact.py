"""Credentials in URLs are masked."""

from __future__ import annotations

import pytest

from conveyor.domain.redact import mask_url_credentials


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("https://alice:s3cret@git.example.com/team/app.git", "https://alice:***@git.example.com/team/app.git"),
        ("https://ghp_TOKEN@github.com/o/r.git", "https://***@github.com/o/r.git"),
        ("https://alice:p@ss@host/r", "https://alice:***@host/r"),
        ("ssh://git@host/r.git", "ssh://git@host/r.git"),
        ("ssh://git:pw@host/r.git", "ssh://git:***@host/r.git"),
        ("git@github.com:o/r.git", "git@github.com:o/r.git"),
        ("https://host/r.git?ref=a@b", "https://host/r.git?ref=a@b"),
        ("fatal: unable to access 'https://u:pw@h/r/': 403", "fatal: unable to access 'https://u:***@h/r/': 403"),
        (None, None),
    ],
)
def test_mask(text, shown):
    assert mask_url_credentials(text) == shown


def test_the_secret_of_a_known_url_is_masked_also_without_its_scheme():
    url = "git://alice:S3CRET@127.0.0.1:1/x.git"
    said = "fatal: unable to look up alice:S3CRET@127.0.0.1:1 (port 9418)"
    assert mask_url_credentials(said, url) == "fatal: unable to look up alice:***@127.0.0.1:1 (port 9418)"
    token_url = "https://ghp_TOKEN@github.com/o/r.git"
    assert mask_url_credentials("could not read from ghp_TOKEN@github.com", token_url) == "could not read from ***@github.com"
    assert mask_url_credentials("git@host: denied", "ssh://git@host/r.git") == "git@host: denied"
