use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn route(prefix: &str, host: Option<&str>) -> Route {
    Route {
        path_prefix: prefix.to_owned(),
        host: host.map(|h| crate::config::Host::of(h).unwrap()),
        upstream: std::sync::Arc::new(
            crate::config::Upstream::parse(&format!("http://{}", host.unwrap_or("any"))).unwrap(),
        ),
        resource: format!("urn:{prefix}"),
        scopes: BTreeMap::new(),
        mcp: None,
        strip_authorization: false,
        keep_headers: Vec::new(),
    }
}

/// The prefix of the chosen route, or `None`: the index's choice, which must be the scan's.
fn chosen<'a>(routes: &'a [Route], host: Option<&str>, path: &str) -> Option<&'a str> {
    let indexed = Index::new(routes).select(routes, host, path);
    let scanned = scan(routes, host, path);
    assert!(
        std::ptr::eq(
            indexed.map_or(std::ptr::null(), |r| r as *const Route),
            scanned.map_or(std::ptr::null(), |r| r as *const Route)
        ),
        "{host:?} {path}: the index chose {:?}, the scan {:?}",
        indexed.map(|r| (&r.host, &r.path_prefix)),
        scanned.map(|r| (&r.host, &r.path_prefix)),
    );
    indexed.map(|r| r.path_prefix.as_str())
}

fn table() -> Vec<Route> {
    ["/", "/invoices", "/products", "/products/admin"]
        .into_iter()
        .map(|p| route(p, None))
        .collect()
}

#[test]
fn dot_segments_are_removed() {
    for (input, want) in [
        ("/products/../invoices", "/invoices"),
        ("/a/./b/../c", "/a/c"),
        ("/../x", "/x"),
        ("/../../..", "/"),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("/a/..", "/"),
        ("/.", "/"),
        ("/...", "/..."),
        ("/a/.b/..c", "/a/.b/..c"),
    ] {
        assert_eq!(normalize(input).as_deref(), Ok(want), "{input}");
    }
}

#[test]
fn encoded_dots_are_decoded_before_dot_segment_removal() {
    for input in [
        "/products/%2e%2e/invoices",
        "/products/%2E%2E/invoices",
        "/products/.%2e/invoices",
        "/products/%2E./invoices",
        "/products/%2e/../invoices",
    ] {
        assert_eq!(normalize(input).as_deref(), Ok("/invoices"), "{input}");
    }
}

#[test]
fn slashes_are_merged_and_a_trailing_slash_kept() {
    for (input, want) in [
        ("//invoices", "/invoices"),
        ("//a///b", "/a/b"),
        ("/invoices/", "/invoices/"),
        ("/invoices//", "/invoices/"),
        ("/", "/"),
        ("//", "/"),
    ] {
        assert_eq!(normalize(input).as_deref(), Ok(want), "{input}");
    }
}

#[test]
fn escapes_of_unreserved_characters_are_decoded_and_others_upper_cased() {
    for (input, want) in [
        ("/%69nvoices", "/invoices"),
        ("/%7e", "/~"),
        ("/%7E%2D%5f%41%30", "/~-_A0"),
        ("/caf%c3%a9", "/caf%C3%A9"),
        ("/a%20b", "/a%20b"),
        ("/a%3f%23", "/a%3F%23"),
        ("/100%25", "/100%25"),
        ("/50%25off", "/50%25off"),
    ] {
        assert_eq!(normalize(input).as_deref(), Ok(want), "{input}");
    }
}

#[test]
fn characters_outside_rfc_3986_are_encoded() {
    assert_eq!(normalize("/café").as_deref(), Ok("/caf%C3%A9"));
    assert_eq!(normalize("/a b\"{}").as_deref(), Ok("/a%20b%22%7B%7D"));
    assert_eq!(
        normalize("/!$&'()*+,=:@-._~").as_deref(),
        Ok("/!$&'()*+,=:@-._~")
    );
}

#[test]
fn tricks_are_refused() {
    use PathError::*;
    for (input, want) in [
        ("invoices", NotAbsolute),
        ("", NotAbsolute),
        ("*", NotAbsolute),
        ("%2Finvoices", NotAbsolute),
        ("/invoices%2F1", EncodedSlash),
        ("/invoices%2f1", EncodedSlash),
        ("/invoices;jsessionid=x", PathParameter),
        ("/invoices%3bx", PathParameter),
        ("/invoices%3B", PathParameter),
        ("/invoices\\1", Backslash),
        ("/invoices%5c1", Backslash),
        ("/invoices%5C1", Backslash),
        ("/invoices%00", Nul),
        ("/invoices\0", Nul),
        ("/invoices\n", ControlCharacter),
        ("/invoices\u{7f}", ControlCharacter),
        ("/invoices\u{85}", ControlCharacter),
        ("/%zz", MalformedEscape),
        ("/a%4", MalformedEscape),
        ("/a%", MalformedEscape),
        ("/a%%41", MalformedEscape),
        ("/a%é9", MalformedEscape),
        ("/products/%252e%252e/invoices", DoubleEncoded),
        ("/%2569nvoices", DoubleEncoded),
        ("/%25%32%65", DoubleEncoded),
        ("/invoices/%c0%ae%c0%ae/x", NotUtf8),
        ("/%C0%AF", NotUtf8),
        ("/%80", NotUtf8),
        ("/%E2%82", NotUtf8),
        ("/%ED%A0%80", NotUtf8),
        ("/caf%C3", NotUtf8),
        ("/é%A9", NotUtf8),
    ] {
        assert_eq!(normalize(input), Err(want), "{input:?}");
    }
}

#[test]
fn escapes_of_utf8_are_kept_as_escapes() {
    assert_eq!(normalize("/caf%c3%a9").unwrap(), "/caf%C3%A9");
    assert_eq!(normalize("/café").unwrap(), "/caf%C3%A9");
    assert_eq!(normalize("/%F0%9F%A6%80/x").unwrap(), "/%F0%9F%A6%80/x");
}

#[test]
fn errors_read_as_terse_400_bodies() {
    assert_eq!(PathError::EncodedSlash.to_string(), "encoded '/' in path");
    assert_eq!(
        PathError::PathParameter.to_string(),
        "path parameter (';') in path"
    );
}

#[test]
fn a_prefix_matches_itself_and_what_continues_with_a_slash() {
    let routes = [route("/invoices", None)];
    for path in ["/invoices", "/invoices/", "/invoices/1"] {
        assert_eq!(chosen(&routes, None, path), Some("/invoices"), "{path}");
    }
    for path in ["/invoices2", "/invoice", "/", "/products/invoices"] {
        assert_eq!(chosen(&routes, None, path), None, "{path}");
    }
}

#[test]
fn the_root_route_matches_every_path() {
    let routes = table();
    assert_eq!(chosen(&routes, None, "/"), Some("/"));
    assert_eq!(chosen(&routes, None, "/invoices2"), Some("/"));
    assert_eq!(chosen(&routes, None, "/x/y"), Some("/"));
}

#[test]
fn the_longest_prefix_wins_whatever_the_file_order() {
    let mut routes = table();
    for _ in 0..2 {
        assert_eq!(chosen(&routes, None, "/invoices/1"), Some("/invoices"));
        assert_eq!(chosen(&routes, None, "/products"), Some("/products"));
        assert_eq!(
            chosen(&routes, None, "/products/admin/x"),
            Some("/products/admin")
        );
        assert_eq!(
            chosen(&routes, None, "/products/administrator"),
            Some("/products")
        );
        routes.reverse();
    }
}

#[test]
fn a_hand_built_prefix_with_a_trailing_slash_still_matches() {
    let routes = [route("/invoices/", None)];
    assert_eq!(chosen(&routes, None, "/invoices"), Some("/invoices/"));
    assert_eq!(chosen(&routes, None, "/invoices2"), None);
}

#[test]
fn hosts_match_without_case_or_port() {
    let routes = [
        route("/invoices", Some("api.example.com")),
        route("/", None),
    ];
    for host in [
        "api.example.com",
        "API.Example.COM",
        "api.example.com:8443",
        "api.example.com:",
    ] {
        assert_eq!(
            chosen(&routes, Some(host), "/invoices/1"),
            Some("/invoices"),
            "{host}"
        );
    }
    for host in [
        Some("other.example.com"),
        Some("api.example.com.evil"),
        Some("evil@api.example.com"),
        Some("api.example.com:x"),
        Some(""),
        None,
    ] {
        assert_eq!(chosen(&routes, host, "/invoices/1"), Some("/"), "{host:?}");
    }
}

#[test]
fn ipv6_hosts_match_with_and_without_port() {
    let routes = [route("/", Some("[::1]"))];
    for host in ["[::1]", "[::1]:8080"] {
        assert_eq!(chosen(&routes, Some(host), "/"), Some("/"), "{host}");
    }
    for host in ["::1", "[::1", "[::2]:8080", "[::1]x"] {
        assert_eq!(chosen(&routes, Some(host), "/"), None, "{host}");
    }
}

#[test]
fn a_route_naming_the_host_beats_a_host_less_one_of_equal_length() {
    let routes = [
        route("/invoices", None),
        route("/invoices", Some("api.example.com")),
        route("/invoices", Some("api.example.com")),
    ];
    let hit = Index::new(&routes).select(&routes, Some("api.example.com"), "/invoices");
    assert!(hit.is_some_and(|r| std::ptr::eq(r, &routes[1])));
    let other = Index::new(&routes).select(&routes, Some("www.example.com"), "/invoices");
    assert!(other.is_some_and(|r| std::ptr::eq(r, &routes[0])));
}

#[test]
fn a_longer_host_less_prefix_beats_a_shorter_one_naming_the_host() {
    let routes = [
        route("/", Some("api.example.com")),
        route("/invoices", None),
    ];
    assert_eq!(
        chosen(&routes, Some("api.example.com"), "/invoices/1"),
        Some("/invoices")
    );
    assert_eq!(chosen(&routes, Some("api.example.com"), "/x"), Some("/"));
}

/// Path pieces, joined without separators: mostly ones that normalise (so the properties about
/// successful results get plenty of cases), some that must be refused.
fn piece() -> impl Strategy<Value = String> {
    let passes = prop::sample::select(vec![
        "/",
        "//",
        ".",
        "..",
        "%2e",
        "%2E%2e",
        "invoices",
        "products",
        "admin",
        "nvoices",
        "%69nvoices",
        "invoices2",
        "/invoices",
        "/products",
        "/admin",
        "/..",
        "/%2e%2e",
        "/%2E",
        "/%69nvoices",
        "%25",
        "%c3%a9",
        "é",
    ]);
    let refused = prop::sample::select(vec![
        "%2f", ";x", "%3b", "\\", "%5c", "%252e", "%252F", "%2569",
    ]);
    prop_oneof![
        6 => passes.prop_map(str::to_owned),
        1 => refused.prop_map(str::to_owned),
        2 => "[A-Za-z0-9._~-]{0,4}",
    ]
}

/// Often a route's prefix, then pieces mostly separated by `/`, sometimes by `//` or nothing
/// (so the path may not start with `/`, and pieces may glue into longer segments).
fn adversarial_path() -> impl Strategy<Value = String> {
    let start = prop::sample::select(vec!["", "/invoices", "/products", "/products/admin"]);
    let separator = prop::sample::select(vec!["/", "/", "/", "//", ""]);
    let pieces = proptest::collection::vec((separator, piece()), 0..10);
    (start, pieces).prop_map(|(start, pieces)| {
        let mut path = start.to_owned();
        for (separator, piece) in pieces {
            path.push_str(separator);
            path.push_str(&piece);
        }
        path
    })
}

/// How an upstream that decodes everything, treats `\` as `/` and strips `;` parameters
/// (Tomcat-like) reads `path`, with `rounds` decoding passes.
fn upstream_view(path: &str, rounds: usize) -> String {
    let mut bytes = path.as_bytes().to_vec();
    for _ in 0..rounds {
        bytes = percent_encoding::percent_decode(&bytes).collect();
    }
    let text = String::from_utf8_lossy(&bytes).replace('\\', "/");
    let mut segments: Vec<&str> = Vec::new();
    for segment in text.split('/') {
        match segment.split(';').next().unwrap_or("") {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    format!("/{}", segments.join("/"))
}

fn assert_canonical(out: &str) {
    assert!(out.starts_with('/'), "{out}");
    assert!(!out.contains("//"), "{out}");
    assert!(!out.split('/').any(|s| s == "." || s == ".."), "{out}");
    let upper = out.to_ascii_uppercase();
    for bad in ["%2E", "%2F", "%5C", "%00", "%3B", "\\", ";"] {
        assert!(!upper.contains(bad), "{out} holds {bad}");
    }
    let bytes = out.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'%' {
            let pair = bytes.get(i + 1..i + 3).unwrap_or_default();
            assert!(
                pair.len() == 2
                    && pair
                        .iter()
                        .all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(h)),
                "{out}: bad escape at {i}"
            );
        } else {
            assert!(is_path_literal(b), "{out}: byte {b:#x} at {i}");
        }
    }
}

proptest! {
    /// (a) and (b): Ok outputs are fixed points and hold nothing a trick needs.
    #[test]
    fn normalize_is_idempotent_and_canonical(
        path in prop_oneof![adversarial_path(), any::<String>(), "/[ -~]{0,30}"],
    ) {
        if let Ok(out) = normalize(&path) {
            assert_canonical(&out);
            prop_assert_eq!(normalize(&out), Ok(out.clone()));
        }
    }

    /// Any encoded `/`, `\` or `;` in any form is refused.
    #[test]
    fn tricks_never_pass(path in adversarial_path()) {
        let upper = path.to_ascii_uppercase();
        if ["%2F", "%5C", "%3B", "\\", ";"].iter().any(|bad| upper.contains(bad)) {
            prop_assert!(normalize(&path).is_err());
        }
    }

    /// (c) and (d): a route is chosen only for paths under it; `/invoices` exactly for those.
    #[test]
    fn a_chosen_prefix_is_a_prefix_of_the_normalised_path(
        path in adversarial_path(),
        host in proptest::option::of("[A-Za-z.:\\[\\]0-9]{0,12}"),
    ) {
        let routes = table();
        if let Ok(normal) = normalize(&path) {
            let prefix = chosen(&routes, host.as_deref(), &normal);
            prop_assert!(prefix.is_some(), "the root route matches everything");
            if let Some(p) = prefix.filter(|p| *p != "/") {
                let under = normal == p || normal.starts_with(&format!("{p}/"));
                prop_assert!(under, "{} chose {}", normal, p);
            }
            let under_invoices = normal == "/invoices" || normal.starts_with("/invoices/");
            prop_assert_eq!(prefix == Some("/invoices"), under_invoices, "{}", normal);
        }
    }

    /// Whatever the gateway accepts, an upstream that decodes once or twice, treats `\` as `/`
    /// and strips `;` parameters routes the original path (and the forwarded one) alike.
    #[test]
    fn the_gateway_and_a_decoding_upstream_agree_on_the_route(path in adversarial_path()) {
        let routes = table();
        if let Ok(normal) = normalize(&path) {
            let ours = chosen(&routes, None, &normal);
            for rounds in 1..=2 {
                let theirs = upstream_view(&path, rounds);
                let upstream_route = chosen(&routes, None, &theirs);
                prop_assert_eq!(ours, upstream_route, "{} read as {}", normal, theirs);
                // The forwarded path itself reads the same to the upstream.
                prop_assert_eq!(upstream_view(&normal, rounds), theirs.clone());
            }
        }
    }
}

/// A random route set: prefixes from a few segments (so that they nest and repeat), hosts
/// from a few names, some routes with none.
fn route_set() -> impl Strategy<Value = Vec<Route>> {
    let segment = prop::sample::select(vec!["a", "b", "ab", "a.b", "%C3%A9"]);
    let prefix = proptest::collection::vec(segment, 0..4).prop_map(|segments| {
        if segments.is_empty() {
            "/".to_owned()
        } else {
            segments.iter().map(|s| format!("/{s}")).collect()
        }
    });
    let host = proptest::option::of(prop::sample::select(vec![
        "api.example.com",
        "www.example.com",
        "[::1]",
    ]));
    proptest::collection::vec((prefix, host), 0..24).prop_map(|routes| {
        routes
            .iter()
            .map(|(prefix, host)| route(prefix, *host))
            .collect()
    })
}

/// A request path made of the same segments, sometimes with a trailing slash or none at the
/// start, and a request authority in any case, with or without a port, or none.
fn request() -> impl Strategy<Value = (Option<String>, String)> {
    let segment = prop::sample::select(vec!["a", "b", "ab", "a.b", "%C3%A9", "c", ""]);
    let path = (
        proptest::collection::vec(segment, 0..5),
        prop::sample::select(vec!["", "/"]),
        any::<bool>(),
    )
        .prop_map(|(segments, end, slash)| {
            let path: String = segments.iter().map(|s| format!("/{s}")).collect();
            let path = format!("{path}{end}");
            if slash {
                path
            } else {
                path.trim_start_matches('/').to_owned()
            }
        });
    let host = proptest::option::of(prop::sample::select(vec![
        "api.example.com",
        "API.Example.COM:8443",
        "www.example.com",
        "[::1]:80",
        "other.example",
        "bad host",
    ]));
    (host.prop_map(|h| h.map(str::to_owned)), path)
}

proptest! {
    /// The index chooses what the scan of every route chooses, on any route set.
    #[test]
    fn the_index_and_the_scan_agree(routes in route_set(), (host, path) in request()) {
        chosen(&routes, host.as_deref(), &path);
        let index = Index::new(&routes);
        // The metadata lookup: the first route of the file with that exact prefix.
        let exact = index.exact(&routes, host.as_deref(), &path);
        let first = routes.iter().find(|r| {
            r.path_prefix == path
                && r.host
                    .as_ref()
                    .is_none_or(|h| host.as_deref().is_some_and(|got| h.matches(got)))
        });
        prop_assert_eq!(
            exact.map(|r| r as *const Route),
            first.map(|r| r as *const Route)
        );
    }
}
