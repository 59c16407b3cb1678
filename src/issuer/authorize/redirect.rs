//! Sending the browser back to the client: RFC 6749 §4.1.2 with `iss` (RFC 9207).

use http::{header, HeaderValue, Response, StatusCode};

use crate::http::Body;

/// A redirect to `redirect_uri` with `params`, then `state` and `iss`, added to its query.
pub(super) fn to(
    redirect_uri: &str,
    params: &[(&str, &str)],
    state: Option<&str>,
    iss: &str,
    status: StatusCode,
) -> Response<Body> {
    let location = match url::Url::parse(redirect_uri) {
        Ok(mut url) => {
            {
                let mut query = url.query_pairs_mut();
                query.extend_pairs(params);
                if let Some(state) = state {
                    query.append_pair("state", state);
                }
                query.append_pair("iss", iss);
            }
            url.to_string()
        }
        // Registered redirect URIs were validated as absolute URLs.
        Err(_) => redirect_uri.to_owned(),
    };
    let mut response = Response::new(crate::http::full(""));
    *response.status_mut() = status;
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_state_and_iss_join_the_registered_query() {
        let response = to(
            "https://app.example/cb?keep=1",
            &[("code", "c 1"), ("x", "&")],
            Some("st"),
            "https://id.example",
            StatusCode::FOUND,
        );
        assert_eq!(response.status(), StatusCode::FOUND);
        assert_eq!(
            response.headers()[header::LOCATION],
            "https://app.example/cb?keep=1&code=c+1&x=%26&state=st&iss=https%3A%2F%2Fid.example"
        );
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        let without_state = to(
            "https://app.example/cb",
            &[],
            None,
            "i",
            StatusCode::SEE_OTHER,
        );
        assert_eq!(
            without_state.headers()[header::LOCATION],
            "https://app.example/cb?iss=i"
        );
    }
}
