//! isogate's integration tests: one binary (each file under tests/ would be a separate link).
//! Every test starts the real server on 127.0.0.1:0 and speaks real HTTP to it.

// The harness's helpers are `pub` for the test modules beside it, not for anyone outside.
#![allow(unreachable_pub)]

mod admin;
mod cli;
mod connections;
mod discovery;
mod documents;
mod dpop;
mod fleet;
mod gateway;
mod grants;
mod interactive;
mod interop;
mod logins;
mod mcp;
mod postgres;
mod private_key_jwt;
mod registration;
mod reload;
mod servers;
mod support;
mod tls;
mod token;
