"""Event signatures: HMAC-SHA256 over the CloudEvent's identifying headers and the body.

Hand-written because it is a few lines of `hmac` and no library signs CloudEvents webhooks.
The header is `Keel-Signature: keyid=<id>,alg=hmac-sha256,sig=<hex>`; the signed bytes are

    ce-id "\\n" ce-source "\\n" ce-type "\\n" ce-time "\\n" body

(header values exactly as sent). Several keys may be configured: the last one signs, and a
receiver verifies against whichever key the `keyid` names, so keys rotate without a gap.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

__all__ = ["ALGORITHM", "SIGNATURE_HEADER", "SIGNED_HEADERS", "sign", "signed_bytes", "verify"]

SIGNATURE_HEADER = "Keel-Signature"
SIGNED_HEADERS = ("ce-id", "ce-source", "ce-type", "ce-time")
ALGORITHM = "hmac-sha256"


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def signed_bytes(headers: Mapping[str, str], body: bytes) -> bytes:
    """What the signature covers; a missing signed header raises KeyError."""
    low = _lower(headers)
    return "".join(f"{low[h]}\n" for h in SIGNED_HEADERS).encode() + body


def sign(headers: Mapping[str, str], body: bytes, key_id: str, secret: str) -> str:
    """The Keel-Signature header value for a request with these headers and body."""
    mac = hmac.new(secret.encode(), signed_bytes(headers, body), hashlib.sha256).hexdigest()
    return f"keyid={key_id},alg={ALGORITHM},sig={mac}"


def verify(headers: Mapping[str, str], body: bytes, secrets: Mapping[str, str]) -> bool:
    """Whether the request carries a valid signature by one of `secrets` ({key id: secret})."""
    try:
        parts = dict(p.split("=", 1) for p in _lower(headers)[SIGNATURE_HEADER.lower()].split(","))
        secret = secrets[parts["keyid"]]
        payload = signed_bytes(headers, body)
    except (KeyError, ValueError):
        return False
    if parts.get("alg") != ALGORITHM:
        return False
    expected = hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("sig", ""))
