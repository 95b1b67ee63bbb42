//! JSON parsing that refuses an object with the same key twice.
//!
//! serde_json keeps the last of duplicate keys; another parser may keep the first. A signed
//! file that two readers understand differently is refused instead (docs/bundle-format.md).

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Parses `bytes` as one JSON value; an object with a repeated key is an error.
pub fn parse_unique(bytes: &[u8]) -> serde_json::Result<Value> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = Unique::deserialize(&mut de)?;
    de.end()?;
    Ok(v.0)
}

struct Unique(Value);

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Unique, D::Error> {
        d.deserialize_any(UniqueVisitor)
    }
}

struct UniqueVisitor;

impl<'de> Visitor<'de> for UniqueVisitor {
    type Value = Unique;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Unique, E> {
        Ok(Unique(Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Unique, E> {
        Ok(Unique(Value::from(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Unique, E> {
        Ok(Unique(Value::from(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Unique, E> {
        Ok(Unique(Value::from(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Unique, E> {
        Ok(Unique(Value::String(v.to_string())))
    }

    fn visit_string<E>(self, v: String) -> Result<Unique, E> {
        Ok(Unique(Value::String(v)))
    }

    fn visit_unit<E>(self) -> Result<Unique, E> {
        Ok(Unique(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Unique, A::Error> {
        let mut v = Vec::new();
        while let Some(Unique(e)) = seq.next_element()? {
            v.push(e);
        }
        Ok(Unique(Value::Array(v)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Unique, A::Error> {
        let mut m = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            if m.contains_key(&k) {
                return Err(de::Error::custom(format!("duplicate key {k:?}")));
            }
            let Unique(v) = map.next_value()?;
            m.insert(k, v);
        }
        Ok(Unique(Value::Object(m)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_refused_at_any_depth() {
        let ok = br#"{"a":[1,-2,3.5,"x",null,true,{"b":{}}],"c":{"a":1}}"#;
        assert_eq!(
            parse_unique(ok).unwrap(),
            serde_json::from_slice::<Value>(ok).unwrap()
        );
        for bad in [
            &br#"{"a":1,"a":2}"#[..],
            br#"{"x":[{"k":1,"k":1}]}"#,
            br#"{"o":{"p":{"q":1,"q":2}}}"#,
        ] {
            let e = parse_unique(bad).unwrap_err().to_string();
            assert!(e.contains("duplicate key"), "{e}");
        }
        assert!(parse_unique(b"{} x").is_err(), "trailing characters");
        assert!(parse_unique(&[b'['; 200]).is_err(), "recursion limit");
    }
}
