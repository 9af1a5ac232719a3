//! Plain `GET`s, for the tests that ask a listener directly rather than through a `Lab`.

/// `GET url`, with `token` as its bearer when there is one.
pub async fn get(http: &reqwest::Client, url: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = http.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// [`get`], its body as JSON.
pub async fn get_json(http: &reqwest::Client, url: &str, token: Option<&str>) -> serde_json::Value {
    get(http, url, token)
        .await
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}
