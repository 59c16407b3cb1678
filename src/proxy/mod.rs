//! The gateway (SPEC §4): route choice, token enforcement and forwarding.

pub mod route;
