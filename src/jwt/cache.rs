//! The verified-token cache: what signature verification proved, keyed by the token's SHA-256.
