"""Client tokens: which keys verify them and which algorithms each key may use.

Three kinds of key can be configured side by side: an HMAC secret
(``QUART_CHAT_JWT_SECRET``), an identity provider's public key (``QUART_CHAT_JWT_PUBLIC_KEY``,
a PEM file) and its JWKS (``QUART_CHAT_JWKS_URL``, for key rotation). A token's ``alg``
header only picks among the algorithms of the configured kinds, and each key is handed to
PyJWT with its own algorithms only: ``none`` never verifies, and a public key is never
used as an HMAC secret. PyJWT does every verification; nothing here checks a signature.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from .errors import ConfigError, HandshakeRefused

if TYPE_CHECKING:
    from .config import Settings

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_ALGORITHMS = {"secp256r1": ("ES256",), "secp384r1": ("ES384",), "secp521r1": ("ES512",),
                 "secp256k1": ("ES256K",)}
#: Seconds a fetched JWKS is trusted before it is fetched again.
JWKS_LIFESPAN = 300.0
#: Least seconds between two fetches caused by an unknown ``kid`` (a token naming random
#: key ids must not turn every handshake into a request to the identity provider).
JWKS_REFETCH_INTERVAL = 10.0
#: Seconds a JWKS fetch may take.
JWKS_TIMEOUT = 5.0


def public_key_algorithms(path: str) -> tuple[Any, tuple[str, ...]]:
    """The public key in the PEM file ``path`` and the algorithms it may verify."""
    try:
        key = load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"QUART_CHAT_JWT_PUBLIC_KEY {path}: not a readable PEM public key "
                          f"({exc})") from None
    if isinstance(key, rsa.RSAPublicKey):
        return key, RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in EC_ALGORITHMS:
        return key, EC_ALGORITHMS[key.curve.name]
    if isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return key, ("EdDSA",)
    raise ConfigError(f"QUART_CHAT_JWT_PUBLIC_KEY {path}: unsupported key type "
                      f"{type(key).__name__}")


class Jwks:
    """An identity provider's key set: fetched once, refetched for an unknown ``kid``
    (at most every ``JWKS_REFETCH_INTERVAL``) and when ``JWKS_LIFESPAN`` has passed."""

    def __init__(self, url: str) -> None:
        self.client = jwt.PyJWKClient(url, cache_jwk_set=True, lifespan=int(JWKS_LIFESPAN),
                                      timeout=int(JWKS_TIMEOUT))
        self._refetch = threading.Lock()
        self._refetched_at = float("-inf")

    async def key(self, kid: str | None) -> jwt.PyJWK | None:
        """The signing key named ``kid`` (fetching off the event loop), or None."""
        return await asyncio.to_thread(self._key, kid)

    def _key(self, kid: str | None) -> jwt.PyJWK | None:
        key = self._find(kid, refresh=False)
        if key is None:
            with self._refetch:
                if time.monotonic() - self._refetched_at >= JWKS_REFETCH_INTERVAL:
                    self._refetched_at = time.monotonic()
                    key = self._find(kid, refresh=True)
        return key

    def _find(self, kid: str | None, *, refresh: bool) -> jwt.PyJWK | None:
        keys = self.client.get_signing_keys(refresh=refresh)
        if kid is None:
            return keys[0] if len(keys) == 1 else None
        return next((key for key in keys if key.key_id == kid), None)


class TokenVerifier:
    """Verifies client tokens with every key kind the settings configure."""

    def __init__(self, settings: Settings) -> None:
        self.secret = settings.jwt_secret
        self.public_key: Any = None
        self.public_algorithms: tuple[str, ...] = ()
        if settings.jwt_public_key:
            self.public_key, self.public_algorithms = public_key_algorithms(
                settings.jwt_public_key)
        self.jwks = Jwks(settings.jwks_url) if settings.jwks_url else None
        self.audience = settings.jwt_audience
        self.issuer = settings.jwt_issuer
        self.required = ["sub", "exp"] if settings.require_exp else ["sub"]

    async def claims(self, token: str) -> dict[str, Any]:
        """The verified claims of ``token``; :class:`HandshakeRefused` (401) otherwise."""
        try:
            header = jwt.get_unverified_header(token)
            key, algorithms = await self._key_for(header)
            claims = jwt.decode(token, key, algorithms=list(algorithms), audience=self.audience,
                                issuer=self.issuer, options={"require": self.required})
        except jwt.ExpiredSignatureError:
            raise HandshakeRefused(401, "token expired") from None
        except jwt.PyJWKClientConnectionError:
            raise HandshakeRefused(503, "the token keys (JWKS) cannot be fetched") from None
        except jwt.PyJWKClientError as exc:
            raise HandshakeRefused(401, f"invalid token: {exc}") from None
        except jwt.InvalidTokenError as exc:
            raise HandshakeRefused(401, f"invalid token: {exc}") from None
        if not isinstance(claims.get("sub"), str):
            raise HandshakeRefused(401, "invalid token: 'sub' must be a string")
        return dict(claims)

    async def _key_for(self, header: dict[str, Any]) -> tuple[Any, tuple[str, ...]]:
        """The configured key for the token's ``alg``, with the algorithms it may use."""
        alg = header.get("alg")
        if self.secret and alg in HMAC_ALGORITHMS:
            return self.secret, HMAC_ALGORITHMS
        # Both a public key and a JWKS: a token naming its key (``kid``) is the JWKS's.
        if (self.public_key is not None and alg in self.public_algorithms
                and (self.jwks is None or "kid" not in header)):
            return self.public_key, self.public_algorithms
        if self.jwks is not None and alg not in HMAC_ALGORITHMS and alg != "none":
            kid = header.get("kid")
            jwk = await self.jwks.key(kid if isinstance(kid, str) else None)
            if jwk is not None and jwk.algorithm_name not in HMAC_ALGORITHMS:
                return jwk, (jwk.algorithm_name,)
            raise HandshakeRefused(401, f"invalid token: no key with kid {kid!r}")
        raise HandshakeRefused(401, f"invalid token: algorithm {alg!r} is not accepted")


def expiry(claims: dict[str, Any] | None) -> float | None:
    """When verified ``claims`` expire (epoch seconds, as PyJWT reads ``exp``); None: never."""
    if claims is None or "exp" not in claims:
        return None
    return float(int(claims["exp"]))


@functools.lru_cache(maxsize=8)
def verifier(settings: Settings) -> TokenVerifier:
    """The verifier of ``settings`` (one per settings, so the JWKS cache is shared)."""
    return TokenVerifier(settings)


def issue(secret: str, subject: str, ttl: float, channels: tuple[str, ...] = ()) -> str:
    """A development token (HS256) for ``subject``, valid ``ttl`` seconds."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": subject, "iat": now, "exp": now + int(ttl)}
    if channels:
        claims["channels"] = list(channels)
    return jwt.encode(claims, secret, algorithm="HS256")
