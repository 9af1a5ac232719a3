use super::*;
use proptest::prelude::*;
use std::time::{Duration, UNIX_EPOCH};

/// RFC 9110's example instant, 1994-11-06 08:49:37 GMT.
const EXAMPLE: u64 = 784_111_777;
const EXAMPLE_DATE: &str = "Sun, 06 Nov 1994 08:49:37 GMT";

fn representation(len: u64) -> Representation {
    Representation {
        len,
        etag: ETag::new("v1").expect("tag"),
        // Half a second past the example: Last-Modified drops the fraction.
        last_modified: Some(UNIX_EPOCH + Duration::new(EXAMPLE, 500_000_000)),
    }
}

fn headers(pairs: &[(HeaderName, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(name.clone(), HeaderValue::from_str(value).expect("value"));
    }
    map
}

fn get(pairs: &[(HeaderName, &str)]) -> Answer {
    decide(&Method::GET, &headers(pairs), &representation(1000))
}

fn header(answer: &Answer, name: HeaderName) -> Option<&str> {
    answer.headers.get(name).and_then(|v| v.to_str().ok())
}

fn assert_full(answer: &Answer, why: &str) {
    assert_eq!(answer.status, StatusCode::OK, "{why}");
    assert_eq!(answer.body, Some(0..1000), "{why}");
    assert_eq!(
        header(answer, header::CONTENT_LENGTH),
        Some("1000"),
        "{why}"
    );
    assert_eq!(header(answer, header::CONTENT_RANGE), None, "{why}");
}

fn assert_partial(answer: &Answer, body: Range<u64>, why: &str) {
    assert_eq!(answer.status, StatusCode::PARTIAL_CONTENT, "{why}");
    let content_range = format!("bytes {}-{}/1000", body.start, body.end - 1);
    let content_length = (body.end - body.start).to_string();
    assert_eq!(answer.body, Some(body), "{why}");
    assert_eq!(
        header(answer, header::CONTENT_RANGE),
        Some(content_range.as_str()),
        "{why}"
    );
    assert_eq!(
        header(answer, header::CONTENT_LENGTH),
        Some(content_length.as_str()),
        "{why}"
    );
}

#[test]
fn a_plain_get_is_the_whole_representation_with_its_validators() {
    let answer = get(&[]);
    assert_full(&answer, "plain");
    assert_eq!(header(&answer, header::ETAG), Some("\"v1\""));
    assert_eq!(header(&answer, header::ACCEPT_RANGES), Some("bytes"));
    assert_eq!(header(&answer, header::LAST_MODIFIED), Some(EXAMPLE_DATE));
    assert_eq!(answer.headers.len(), 4, "{:?}", answer.headers);
}

#[test]
fn without_a_date_there_is_no_last_modified() {
    let mut rep = representation(10);
    rep.last_modified = None;
    let answer = decide(&Method::GET, &HeaderMap::new(), &rep);
    assert_eq!(header(&answer, header::LAST_MODIFIED), None);
    // A date the header cannot hold is left out too.
    rep.last_modified = Some(UNIX_EPOCH + Duration::from_secs(300_000_000_000));
    let answer = decide(&Method::GET, &HeaderMap::new(), &rep);
    assert_eq!(header(&answer, header::LAST_MODIFIED), None);
    assert_eq!(answer.status, StatusCode::OK);
}

#[test]
fn one_range_in_each_form_is_206() {
    for (range, body) in [
        ("bytes=0-499", 0..500),
        ("bytes=500-999", 500..1000),
        ("bytes=500-", 500..1000),
        ("bytes=999-", 999..1000),
        ("bytes=-1", 999..1000),
        ("bytes=-500", 500..1000),
        ("bytes=-1000", 0..1000),
        ("bytes=-5000", 0..1000),
        ("bytes=0-0", 0..1),
        ("bytes=900-5000", 900..1000),
        ("bytes=0-99999999999999999999999999", 0..1000),
        ("BYTES=10-19", 10..20),
        ("bytes=10-19,", 10..20),
    ] {
        let answer = get(&[(header::RANGE, range)]);
        assert_partial(&answer, body, range);
        assert_eq!(header(&answer, header::ETAG), Some("\"v1\""), "{range}");
        assert_eq!(header(&answer, header::ACCEPT_RANGES), Some("bytes"));
    }
}

#[test]
fn a_range_that_selects_no_byte_is_416() {
    for range in [
        "bytes=1000-",
        "bytes=1000-2000",
        "bytes=-0",
        "bytes=99999999999999999999999-",
    ] {
        let answer = get(&[(header::RANGE, range)]);
        assert_eq!(answer.status, StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(answer.body, None, "{range}");
        assert_eq!(header(&answer, header::CONTENT_RANGE), Some("bytes */1000"));
        assert_eq!(header(&answer, header::CONTENT_LENGTH), None);
    }
}

#[test]
fn several_ranges_get_the_whole_representation() {
    for range in [
        "bytes=0-1,5-6",
        "bytes=0-0,-1",
        "bytes=2000-,3000-",
        "bytes=0-1, 0-1",
    ] {
        assert_full(&get(&[(header::RANGE, range)]), range);
    }
    // Two Range lines are no clearer than one list.
    assert_full(
        &get(&[(header::RANGE, "bytes=0-1"), (header::RANGE, "bytes=2-3")]),
        "two lines",
    );
}

#[test]
fn a_malformed_range_is_ignored() {
    for range in [
        "bytes=5-3",
        "bytes=abc",
        "bytes=",
        "bytes",
        "items=0-1",
        "bytes =0-1",
        "bytes=0-1,x",
        "bytes=1-2-3",
        "=0-1",
    ] {
        assert_full(&get(&[(header::RANGE, range)]), range);
    }
    let mut map = HeaderMap::new();
    map.insert(
        header::RANGE,
        HeaderValue::from_bytes(b"bytes=\xff-1").expect("obs-text is a valid header value"),
    );
    assert_full(
        &decide(&Method::GET, &map, &representation(1000)),
        "not utf-8",
    );
}

#[test]
fn if_range_with_the_strong_tag_or_exact_date_keeps_the_range() {
    for if_range in [
        "\"v1\"",
        " \"v1\" ",
        EXAMPLE_DATE,
        "Sunday, 06-Nov-94 08:49:37 GMT",
    ] {
        assert_partial(
            &get(&[(header::RANGE, "bytes=0-9"), (header::IF_RANGE, if_range)]),
            0..10,
            if_range,
        );
    }
}

#[test]
fn if_range_that_does_not_match_gets_the_whole_representation() {
    for if_range in [
        "\"v0\"",
        // Weak tags never match here: the client cannot know its bytes are the same.
        "W/\"v1\"",
        "\"v1\", \"v0\"",
        "Sun, 06 Nov 1994 08:49:38 GMT",
        "Sun, 06 Nov 1994 08:49:36 GMT",
        "v1",
        "",
    ] {
        assert_full(
            &get(&[(header::RANGE, "bytes=0-9"), (header::IF_RANGE, if_range)]),
            if_range,
        );
    }
    assert_full(
        &get(&[
            (header::RANGE, "bytes=0-9"),
            (header::IF_RANGE, "\"v1\""),
            (header::IF_RANGE, "\"v1\""),
        ]),
        "two if-range lines",
    );
    // A date cannot match a representation without one.
    let mut rep = representation(1000);
    rep.last_modified = None;
    let answer = decide(
        &Method::GET,
        &headers(&[
            (header::RANGE, "bytes=0-9"),
            (header::IF_RANGE, EXAMPLE_DATE),
        ]),
        &rep,
    );
    assert_eq!(answer.status, StatusCode::OK);
    // An unsatisfiable range behind a mismatching If-Range is no error either: it is not looked at.
    assert_full(
        &get(&[(header::RANGE, "bytes=5000-"), (header::IF_RANGE, "\"v0\"")]),
        "ignored before resolving",
    );
}

#[test]
fn if_range_without_range_changes_nothing() {
    assert_full(&get(&[(header::IF_RANGE, "\"v0\"")]), "no range");
    assert_full(&get(&[(header::IF_RANGE, "\"v1\"")]), "no range");
}

#[test]
fn if_none_match_naming_the_tag_is_304() {
    for tags in [
        "\"v1\"",
        "W/\"v1\"",
        "*",
        "\"v0\", \"v1\"",
        "\"a\",W/\"v1\", \"b\"",
    ] {
        for method in [Method::GET, Method::HEAD] {
            let answer = decide(
                &method,
                &headers(&[(header::IF_NONE_MATCH, tags), (header::RANGE, "bytes=0-1")]),
                &representation(1000),
            );
            assert_eq!(answer.status, StatusCode::NOT_MODIFIED, "{tags} {method}");
            assert_eq!(answer.body, None);
            assert_eq!(header(&answer, header::ETAG), Some("\"v1\""));
            assert_eq!(header(&answer, header::CONTENT_LENGTH), None);
            assert_eq!(answer.headers.len(), 1, "{:?}", answer.headers);
        }
    }
    // A list split over lines is one list.
    let answer = get(&[
        (header::IF_NONE_MATCH, "\"v0\""),
        (header::IF_NONE_MATCH, "\"v1\""),
    ]);
    assert_eq!(answer.status, StatusCode::NOT_MODIFIED);
}

#[test]
fn if_none_match_otherwise_is_served() {
    for tags in [
        "\"v0\"",
        "\"V1\"",
        "\"v1",
        "v1",
        "\"v1\" \"v0\"",
        "",
        "*, \"v1\"",
    ] {
        assert_full(&get(&[(header::IF_NONE_MATCH, tags)]), tags);
    }
    assert_full(
        &get(&[
            (header::IF_NONE_MATCH, "\"v1\""),
            (header::IF_NONE_MATCH, "garbage"),
        ]),
        "one malformed line spoils the list",
    );
    // Not current, so a range is honoured as usual.
    assert_partial(
        &get(&[
            (header::IF_NONE_MATCH, "\"v0\""),
            (header::RANGE, "bytes=0-0"),
        ]),
        0..1,
        "range",
    );
}

#[test]
fn if_modified_since_counts_only_without_if_none_match() {
    for (since, expected) in [
        (EXAMPLE_DATE, StatusCode::NOT_MODIFIED),
        ("Sun, 06 Nov 1994 08:49:38 GMT", StatusCode::NOT_MODIFIED),
        ("Sun Nov  6 08:49:37 1994", StatusCode::NOT_MODIFIED),
        ("Sun, 06 Nov 1994 08:49:36 GMT", StatusCode::OK),
        ("Thu, 01 Jan 1970 00:00:00 GMT", StatusCode::OK),
        ("not a date", StatusCode::OK),
        ("", StatusCode::OK),
    ] {
        assert_eq!(
            get(&[(header::IF_MODIFIED_SINCE, since)]).status,
            expected,
            "{since}"
        );
    }
    // A tag that does not match wins over a date that would.
    let answer = get(&[
        (header::IF_NONE_MATCH, "\"v0\""),
        (header::IF_MODIFIED_SINCE, EXAMPLE_DATE),
    ]);
    assert_full(&answer, "the tag decides");
    // Two dates are no date.
    assert_full(
        &get(&[
            (header::IF_MODIFIED_SINCE, EXAMPLE_DATE),
            (header::IF_MODIFIED_SINCE, EXAMPLE_DATE),
        ]),
        "two lines",
    );
    // Without a Last-Modified there is nothing to compare.
    let mut rep = representation(1000);
    rep.last_modified = None;
    let answer = decide(
        &Method::GET,
        &headers(&[(header::IF_MODIFIED_SINCE, EXAMPLE_DATE)]),
        &rep,
    );
    assert_eq!(answer.status, StatusCode::OK);
}

#[test]
fn head_carries_the_headers_of_get_without_a_body() {
    for pairs in [
        vec![],
        vec![(header::IF_NONE_MATCH, "\"v0\"")],
        vec![(header::RANGE, "bytes=0-1,3-4")],
    ] {
        let get = decide(&Method::GET, &headers(&pairs), &representation(1000));
        let head = decide(&Method::HEAD, &headers(&pairs), &representation(1000));
        assert_eq!(head.status, get.status);
        assert_eq!(head.headers, get.headers);
        assert_eq!(head.body, None);
    }
    // Range handling is defined for GET only (RFC 9110 §14.2).
    let head = decide(
        &Method::HEAD,
        &headers(&[(header::RANGE, "bytes=0-1")]),
        &representation(1000),
    );
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(header(&head, header::CONTENT_LENGTH), Some("1000"));
    assert_eq!(head.body, None);
}

#[test]
fn other_methods_are_405() {
    for method in [Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS] {
        let answer = decide(&method, &HeaderMap::new(), &representation(1000));
        assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(header(&answer, header::ALLOW), Some("GET, HEAD"));
        assert_eq!(answer.body, None);
    }
}

#[test]
fn an_empty_representation_ignores_range() {
    for range in ["bytes=0-", "bytes=-1", "bytes=0-0"] {
        let answer = decide(
            &Method::GET,
            &headers(&[(header::RANGE, range)]),
            &representation(0),
        );
        assert_eq!(answer.status, StatusCode::OK, "{range}");
        assert_eq!(answer.body, Some(0..0));
        assert_eq!(header(&answer, header::CONTENT_LENGTH), Some("0"));
    }
}

#[test]
fn huge_lengths_do_not_overflow() {
    let rep = representation(u64::MAX);
    let answer = decide(
        &Method::GET,
        &headers(&[(header::RANGE, "bytes=-99999999999999999999999")]),
        &rep,
    );
    assert_eq!(answer.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(answer.body, Some(0..u64::MAX));
    assert_eq!(
        header(&answer, header::CONTENT_RANGE),
        Some(format!("bytes 0-{}/{}", u64::MAX - 1, u64::MAX).as_str())
    );
    let answer = decide(
        &Method::GET,
        &headers(&[(header::RANGE, "bytes=18446744073709551615-")]),
        &rep,
    );
    assert_eq!(answer.status, StatusCode::RANGE_NOT_SATISFIABLE);
}

/// The invariants of every answer to GET or HEAD for `len` bytes.
fn check(answer: &Answer, method: &Method, len: u64) -> Result<(), TestCaseError> {
    let text = |name| answer.headers.get(name).and_then(|v| v.to_str().ok());
    let length = text(header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    prop_assert!(text(header::ETAG).is_some());
    match answer.status {
        StatusCode::OK => {
            prop_assert_eq!(length, Some(len));
            let expected = (*method == Method::GET).then_some(0..len);
            prop_assert_eq!(&answer.body, &expected);
            prop_assert_eq!(text(header::CONTENT_RANGE), None);
        }
        StatusCode::PARTIAL_CONTENT => {
            prop_assert_eq!(method, &Method::GET);
            let Some(body) = answer.body.clone() else {
                return Err(TestCaseError::fail("a 206 without a body"));
            };
            prop_assert!(
                body.start < body.end && body.end <= len,
                "{body:?} of {len}"
            );
            prop_assert_eq!(length, Some(body.end - body.start));
            let expected = format!("bytes {}-{}/{len}", body.start, body.end - 1);
            prop_assert_eq!(text(header::CONTENT_RANGE), Some(expected.as_str()));
        }
        StatusCode::NOT_MODIFIED => {
            prop_assert_eq!(&answer.body, &None);
            prop_assert_eq!(length, None);
        }
        StatusCode::RANGE_NOT_SATISFIABLE => {
            prop_assert_eq!(method, &Method::GET);
            prop_assert_eq!(&answer.body, &None);
            let expected = format!("bytes */{len}");
            prop_assert_eq!(text(header::CONTENT_RANGE), Some(expected.as_str()));
        }
        other => return Err(TestCaseError::fail(format!("unexpected {other}"))),
    }
    Ok(())
}

fn arb_len() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..4, 0u64..100_000, any::<u64>()]
}

fn arb_position() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u64..8).prop_map(|n| n.to_string()),
        (0u64..200_000).prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        Just("99999999999999999999999".to_owned()),
    ]
}

/// Range headers that are mostly well-formed, so most cases reach the arithmetic.
fn arb_range() -> impl Strategy<Value = String> {
    let spec = prop_oneof![
        (arb_position(), arb_position()).prop_map(|(a, b)| format!("{a}-{b}")),
        arb_position().prop_map(|a| format!("{a}-")),
        arb_position().prop_map(|n| format!("-{n}")),
    ];
    (
        prop_oneof![Just("bytes"), Just("BYTES"), Just("items")],
        prop::collection::vec(spec, 1..3),
        prop_oneof![Just(","), Just(", "), Just(" ,")],
    )
        .prop_map(|(unit, specs, sep)| format!("{unit}={}", specs.join(sep)))
}

fn arb_method() -> impl Strategy<Value = Method> {
    prop_oneof![Just(Method::GET), Just(Method::HEAD)]
}

/// Any bytes a header value may hold, or a plausible value: random bytes alone would almost
/// never look like a tag or a date.
fn arb_value(plausible: &'static [&'static str]) -> impl Strategy<Value = Option<HeaderValue>> {
    prop_oneof![
        Just(None),
        prop::collection::vec(any::<u8>(), 0..40)
            .prop_map(|bytes| HeaderValue::from_bytes(&bytes).ok()),
        prop::sample::select(plausible).prop_map(|v| HeaderValue::from_str(v).ok()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn a_satisfiable_range_lies_inside_and_is_counted(
        len in arb_len(),
        range in arb_range(),
        method in arb_method(),
    ) {
        let answer = decide(&method, &headers(&[(header::RANGE, &range)]), &representation(len));
        check(&answer, &method, len)?;
    }

    #[test]
    fn no_header_bytes_panic(
        len in arb_len(),
        method in arb_method(),
        range in arb_value(&["bytes=0-9", "bytes=-3", "bytes=5-", "bytes=0-1,4-5"]),
        if_range in arb_value(&["\"v1\"", "W/\"v1\"", EXAMPLE_DATE]),
        if_none_match in arb_value(&["\"v1\"", "*", "\"v0\", W/\"v1\""]),
        if_modified_since in arb_value(&[EXAMPLE_DATE, "Sun Nov  6 08:49:37 1994"]),
    ) {
        let mut map = HeaderMap::new();
        for (name, value) in [
            (header::RANGE, range),
            (header::IF_RANGE, if_range),
            (header::IF_NONE_MATCH, if_none_match),
            (header::IF_MODIFIED_SINCE, if_modified_since),
        ] {
            if let Some(value) = value {
                map.insert(name, value);
            }
        }
        let answer = decide(&method, &map, &representation(len));
        check(&answer, &method, len)?;
        // HEAD differs from GET only in what Range may do and in having no body.
        if method == Method::HEAD && !map.contains_key(header::RANGE) {
            let get = decide(&Method::GET, &map, &representation(len));
            prop_assert_eq!(get.status, answer.status);
            prop_assert_eq!(get.headers, answer.headers);
        }
    }
}
