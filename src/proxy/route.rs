//! Request-target normalisation and route selection (SPEC §4, "Route choice").
