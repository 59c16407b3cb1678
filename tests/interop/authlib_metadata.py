"""Interop check: Authlib validates isogate's discovery documents.

    tests/interop/.venv/bin/python tests/interop/authlib_metadata.py --issuer http://127.0.0.1:5000
    tests/interop/.venv/bin/python tests/interop/authlib_metadata.py --issuer ... --no-openid

Fetches both well-known documents and validates them with Authlib's own validators:
RFC 8414 (authlib.oauth2.rfc8414.AuthorizationServerMetadata, with the RFC 9207 extension)
and OpenID Connect Discovery 1.0 (authlib.oidc.discovery.OpenIDProviderMetadata). The JWKS
that the documents name must load in joserfc (Authlib's JOSE library), every key of it.
Exits 0 when everything holds, 1 with a message on stderr otherwise.

With --no-openid (an issuer without an RS256 key), the OpenID document must not be published
(404), and Authlib's OpenID validator must reject the RFC 8414 document: publishing it as
/.well-known/openid-configuration would hand strict OpenID clients a document they refuse.

Authlib requires https for every URL in the metadata but, following RFC 8252, treats http on a
loopback address as secure, so a 127.0.0.1 issuer needs no relaxation: this script removes
AUTHLIB_INSECURE_TRANSPORT from its environment so that the checks are never switched off.
"""

import argparse
import json
import os
import sys
import urllib.error
import urllib.request

from authlib.oauth2 import rfc8414, rfc9207
from authlib.oidc import discovery
from joserfc.jwk import KeySet

TIMEOUT_SECONDS = 10


class CheckFailed(Exception):
    pass


def fetch_json(url, content_type="application/json"):
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            status = response.status
            received_type = response.headers.get_content_type()
            body = response.read()
    except urllib.error.HTTPError as e:
        raise CheckFailed(f"GET {url}: HTTP {e.code}") from e
    except urllib.error.URLError as e:
        raise CheckFailed(f"GET {url}: {e.reason}") from e
    if status != 200:
        raise CheckFailed(f"GET {url}: HTTP {status}")
    if received_type != content_type:
        raise CheckFailed(f"GET {url}: Content-Type is {received_type}, expected {content_type}")
    try:
        doc = json.loads(body)
    except ValueError as e:
        raise CheckFailed(f"GET {url}: not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise CheckFailed(f"GET {url}: not a JSON object")
    return doc


def validate(label, metadata, issuer):
    try:
        metadata.validate(metadata_classes=[rfc9207.AuthorizationServerMetadata])
    except ValueError as e:
        raise CheckFailed(f"{label}: {type(metadata).__module__}.{type(metadata).__name__} rejects it: {e}") from e
    # RFC 8414 §3.3 / OIDC Discovery §4.3: the issuer must be identical to the one used to
    # build the well-known URL.
    if metadata.get("issuer") != issuer:
        raise CheckFailed(f"{label}: issuer is {metadata.get('issuer')!r}, expected {issuer!r}")
    print(f"ok {label}: {type(metadata).__module__}.{type(metadata).__name__}.validate()")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--issuer", required=True, help="issuer URL, e.g. http://127.0.0.1:5000")
    parser.add_argument("--no-openid", action="store_true",
                        help="the issuer is no OpenID provider: expect no OpenID document")
    args = parser.parse_args()
    issuer = args.issuer

    # Authlib reads this at every check; drop it so transport security is always checked.
    if os.environ.pop("AUTHLIB_INSECURE_TRANSPORT", None) is not None:
        print("note: ignoring AUTHLIB_INSECURE_TRANSPORT", file=sys.stderr)

    base = issuer.rstrip("/")
    oauth_doc = fetch_json(f"{base}/.well-known/oauth-authorization-server")
    validate("RFC 8414 /.well-known/oauth-authorization-server",
             rfc8414.AuthorizationServerMetadata(oauth_doc), issuer)

    if args.no_openid:
        try:
            fetch_json(f"{base}/.well-known/openid-configuration")
        except CheckFailed as e:
            if "HTTP 404" not in str(e):
                raise
            print("ok /.well-known/openid-configuration: not published (404)")
        else:
            raise CheckFailed("/.well-known/openid-configuration is published by an issuer without RS256")
        try:
            discovery.OpenIDProviderMetadata(oauth_doc).validate()
        except ValueError as e:
            print(f"ok authlib.oidc.discovery.OpenIDProviderMetadata rejects it as an OpenID document: {e}")
        else:
            raise CheckFailed("Authlib accepts the document as OpenID: the test proves nothing")
        jwks_uri = oauth_doc["jwks_uri"]
    else:
        oidc_doc = fetch_json(f"{base}/.well-known/openid-configuration")
        validate("OIDC Discovery /.well-known/openid-configuration",
                 discovery.OpenIDProviderMetadata(oidc_doc), issuer)
        jwks_uri = oidc_doc["jwks_uri"]
        if oauth_doc.get("jwks_uri") != jwks_uri:
            raise CheckFailed(f"the two documents name different jwks_uri: {oauth_doc.get('jwks_uri')!r} and {jwks_uri!r}")
    jwks = fetch_json(jwks_uri, content_type="application/jwk-set+json")
    published = jwks.get("keys")
    if not isinstance(published, list) or not published:
        raise CheckFailed(f"{jwks_uri}: no keys")
    try:
        key_set = KeySet.import_key_set(jwks)
    except Exception as e:  # joserfc raises several error types for bad keys
        raise CheckFailed(f"{jwks_uri}: joserfc cannot load the key set: {type(e).__name__}: {e}") from e
    if len(key_set.keys) != len(published):
        raise CheckFailed(f"{jwks_uri}: joserfc loaded {len(key_set.keys)} of {len(published)} keys")
    for key in key_set.keys:
        if key.is_private:
            raise CheckFailed(f"{jwks_uri}: key {key.kid!r} is a private key")
    kinds = ", ".join(f"{k.key_type}/{k.alg or '-'}" for k in key_set.keys)
    print(f"ok JWKS {jwks_uri}: {len(key_set.keys)} public keys ({kinds})")
    print("Authlib interop: all checks passed")


if __name__ == "__main__":
    try:
        main()
    except CheckFailed as e:
        print(f"Authlib interop FAILED\n{e}", file=sys.stderr)
        sys.exit(1)
