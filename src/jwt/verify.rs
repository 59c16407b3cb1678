//! Verifying access tokens: compact JWS parsing, the key named by `kid` of a trusted issuer,
//! the signature, `typ`, and the claims the gateway enforces.
