//! Integer fields that take any JSON number with no fraction: JSON has one number type, so
//! `4096.0` is the same number as `4096` (and generated clients and fuzzers send either), where
//! serde on its own refuses a float for an integer field.

use serde::de::{Deserializer, Error, Unexpected, Visitor};

struct Whole;

impl Visitor<'_> for Whole {
    type Value = u64;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a whole number of at least 0")
    }
    fn visit_u64<E: Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }
    fn visit_i64<E: Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
    }
    fn visit_f64<E: Error>(self, v: f64) -> Result<u64, E> {
        // 2^64 itself is the first float above u64::MAX.
        if v.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&v) {
            Ok(v as u64)
        } else {
            Err(E::invalid_value(Unexpected::Float(v), &self))
        }
    }
}

pub fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(Whole)
}

pub fn u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = d.deserialize_any(Whole)?;
    u32::try_from(v)
        .map_err(|_| D::Error::invalid_value(Unexpected::Unsigned(v), &"at most 4294967295"))
}

/// For `#[serde(default, deserialize_with = ...)]` on an `Option<u32>`: `null` is `None`.
pub fn option_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let v: Option<serde_json::Value> = serde::Deserialize::deserialize(d)?;
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => u32(v).map(Some).map_err(D::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct T {
        #[serde(deserialize_with = "super::u64")]
        a: u64,
        #[serde(default, deserialize_with = "super::option_u32")]
        b: Option<u32>,
    }

    fn parse(json: &str) -> Result<T, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn whole_floats_are_integers_and_the_rest_is_refused() {
        assert_eq!(
            parse(r#"{"a": 4096.0, "b": 3.0}"#),
            Ok(T {
                a: 4096,
                b: Some(3)
            })
        );
        assert_eq!(parse(r#"{"a": 7}"#), Ok(T { a: 7, b: None }));
        assert_eq!(parse(r#"{"a": 7, "b": null}"#), Ok(T { a: 7, b: None }));
        for bad in [
            r#"{"a": 1.5}"#,
            r#"{"a": -1}"#,
            r#"{"a": "1"}"#,
            r#"{"a": 1e30}"#,
            r#"{"a": 1, "b": 5000000000}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
