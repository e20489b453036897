"""URLs as nbinit writes them anywhere: without the credentials they may carry.

One rule for every URL nbinit shows or hands on (log lines, the status file, the last-good
record, the server's NBINIT_CONFIG_URL, git's messages): user:password@ (or a lone
token@), token-like query parameters and the fragment are removed; the rest is kept, so the
URL still says where it points and still works where no credential is needed. The
credentials themselves (url_secrets) go to the log, which redacts them wherever else they
appear (an error message quoting the URL, a redirect).
"""

from __future__ import annotations

import re

# Query parameters that carry credentials: API tokens, S3/GCS/Azure signed URLs, codes.
SECRET_PARAMETER = re.compile(
    r"(?i)token|key|secret|passw|pwd|sig|credential|auth|session|code|jwt|bearer|private"
)
UNPARSABLE = "(unparsable URL)"


def public_url(url: str) -> str:
    """The URL without its credentials.

    Anything without `://` (a path, git's scp-like `git@host:repo`, `ext::`) is returned
    as it is: it carries no credential this rule could find.
    """
    from urllib.parse import unquote, urlsplit, urlunsplit

    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:  # an unbalanced [ in the host: nothing of it can be trusted apart
        return UNPARSABLE
    netloc = parts.netloc.rpartition("@")[2]
    query = "&".join(
        item
        for item in parts.query.split("&")
        if item and not SECRET_PARAMETER.search(unquote(item.partition("=")[0]))
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def url_secrets(url: str) -> list[str]:
    """The credentials a URL carries (user:password@, token-like query values), raw and
    percent-decoded: the log redacts each wherever it appears."""
    from urllib.parse import unquote, urlsplit

    if "://" not in url:
        return []
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    userinfo = parts.netloc.rpartition("@")[0]
    # user:password@ -> the password; a lone user@ is a token (https://TOKEN@host/...).
    found = [userinfo.split(":", 1)[-1]] if userinfo else []
    for item in parts.query.split("&"):
        key, _, value = item.partition("=")
        if value and SECRET_PARAMETER.search(unquote(key)):
            found.append(value)
    return sorted({v for raw in found for v in (raw, unquote(raw)) if len(v) >= 4})
