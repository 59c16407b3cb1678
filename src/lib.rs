//! isogate: OAuth 2.0 resource isolation for any HTTP API.
pub mod config;
pub mod jwt;
pub mod resources;
pub mod secret;
