//! AMF0 values: decode and encode, sans-IO.
//!
//! Hostile input is bounded: nesting deeper than [`MAX_DEPTH`] or more than [`MAX_VALUES`]
//! values in one decode fails, and declared counts never preallocate, so decoded size stays
//! proportional to (and a small multiple of) the input. Strings are decoded lossily (invalid
//! UTF-8 becomes U+FFFD) because command names and keys only need comparing.

use bytes::{BufMut, BytesMut};

/// Deepest object/array nesting accepted. RTMP commands and metadata nest two or three levels.
pub const MAX_DEPTH: usize = 32;
/// Most values one [`decode_all`] produces. Commands carry a handful and onMetaData a few
/// dozen; without a cap, a message of one-byte nulls would decode to ~40x its size.
pub const MAX_VALUES: usize = 4096;

/// An AMF0 value. Object-like values keep their keys in wire order.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Number (0x00), an IEEE double.
    Number(f64),
    /// Boolean (0x01).
    Boolean(bool),
    /// String (0x02), long string (0x0C) or XML document (0x0F).
    String(String),
    /// Anonymous object (0x03).
    Object(Vec<(String, Value)>),
    /// Null (0x05).
    Null,
    /// Undefined (0x06).
    Undefined,
    /// ECMA (associative) array (0x08), e.g. onMetaData.
    EcmaArray(Vec<(String, Value)>),
    /// Strict (dense) array (0x0A).
    StrictArray(Vec<Value>),
    /// Milliseconds since the Unix epoch and a (deprecated) time zone offset.
    Date { millis: f64, tz: i16 },
}

impl Value {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The number, if this is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// The value under `key` of an object or ECMA array.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(props) | Value::EcmaArray(props) => {
                props.iter().find(|(k, _)| k == key).map(|(_, v)| v)
            }
            _ => None,
        }
    }
}

/// Why AMF0 input could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The input ends inside a value.
    #[error("AMF0 input ends inside a value")]
    Truncated,
    /// A type marker we do not decode (references, typed objects, AMF3 switch, ...).
    #[error("unsupported AMF0 marker {0:#04x}")]
    UnsupportedMarker(u8),
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("AMF0 nesting deeper than {MAX_DEPTH}")]
    TooDeep,
    /// More than [`MAX_VALUES`] values.
    #[error("more than {MAX_VALUES} AMF0 values")]
    TooMany,
}

mod marker {
    pub const NUMBER: u8 = 0x00;
    pub const BOOLEAN: u8 = 0x01;
    pub const STRING: u8 = 0x02;
    pub const OBJECT: u8 = 0x03;
    pub const NULL: u8 = 0x05;
    pub const UNDEFINED: u8 = 0x06;
    pub const ECMA_ARRAY: u8 = 0x08;
    pub const OBJECT_END: u8 = 0x09;
    pub const STRICT_ARRAY: u8 = 0x0A;
    pub const DATE: u8 = 0x0B;
    pub const LONG_STRING: u8 = 0x0C;
    pub const XML_DOCUMENT: u8 = 0x0F;
}

/// Decodes every value in `input`.
pub fn decode_all(input: &[u8]) -> Result<Vec<Value>, Error> {
    let mut d = Decoder {
        input,
        budget: MAX_VALUES,
    };
    let mut out = Vec::new();
    while !d.input.is_empty() {
        out.push(d.value(0)?);
    }
    Ok(out)
}

/// Decodes values from the front of `input` until it ends or a value fails to decode, and
/// returns those decoded: a command stays usable when trailing arguments are unsupported.
pub fn decode_lenient(input: &[u8]) -> Vec<Value> {
    let mut d = Decoder {
        input,
        budget: MAX_VALUES,
    };
    let mut out = Vec::new();
    while !d.input.is_empty() {
        match d.value(0) {
            Ok(v) => out.push(v),
            Err(_) => break,
        }
    }
    out
}

/// Decodes the first value of `input`; returns it and the bytes after it.
pub fn decode_first(input: &[u8]) -> Result<(Value, &[u8]), Error> {
    let mut d = Decoder {
        input,
        budget: MAX_VALUES,
    };
    let v = d.value(0)?;
    Ok((v, d.input))
}

struct Decoder<'a> {
    input: &'a [u8],
    budget: usize,
}

impl Decoder<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], Error> {
        let (head, rest) = self.input.split_at_checked(n).ok_or(Error::Truncated)?;
        self.input = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, Error> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, Error> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn f64(&mut self) -> Result<f64, Error> {
        let b = self.take(8)?;
        let mut a = [0; 8];
        a.copy_from_slice(b);
        Ok(f64::from_be_bytes(a))
    }
    fn string(&mut self, len: usize) -> Result<String, Error> {
        Ok(String::from_utf8_lossy(self.take(len)?).into_owned())
    }

    fn value(&mut self, depth: usize) -> Result<Value, Error> {
        if depth > MAX_DEPTH {
            return Err(Error::TooDeep);
        }
        self.budget = self.budget.checked_sub(1).ok_or(Error::TooMany)?;
        Ok(match self.u8()? {
            marker::NUMBER => Value::Number(self.f64()?),
            marker::BOOLEAN => Value::Boolean(self.u8()? != 0),
            marker::STRING => {
                let n = self.u16()?;
                Value::String(self.string(n.into())?)
            }
            marker::LONG_STRING | marker::XML_DOCUMENT => {
                let n = self.u32()?;
                Value::String(self.string(usize::try_from(n).map_err(|_| Error::Truncated)?)?)
            }
            marker::OBJECT => Value::Object(self.properties(depth, 0)?),
            marker::NULL => Value::Null,
            marker::UNDEFINED => Value::Undefined,
            marker::ECMA_ARRAY => {
                let count = self.u32()?;
                Value::EcmaArray(self.properties(depth, count)?)
            }
            marker::STRICT_ARRAY => {
                let count = self.u32()?;
                let mut items = Vec::new();
                for _ in 0..count {
                    items.push(self.value(depth + 1)?);
                }
                Value::StrictArray(items)
            }
            marker::DATE => {
                let millis = self.f64()?;
                let tz = self.u16()? as i16;
                Value::Date { millis, tz }
            }
            m => return Err(Error::UnsupportedMarker(m)),
        })
    }

    /// Key/value pairs up to the object end marker. Some encoders end an ECMA array after
    /// `count` entries without the marker; that is accepted at the end of input.
    fn properties(&mut self, depth: usize, count: u32) -> Result<Vec<(String, Value)>, Error> {
        let mut props = Vec::new();
        loop {
            if self.input.is_empty() && props.len() >= count as usize && count > 0 {
                return Ok(props);
            }
            let n = self.u16()?;
            if n == 0 && self.input.first() == Some(&marker::OBJECT_END) {
                self.take(1)?;
                return Ok(props);
            }
            let key = self.string(n.into())?;
            let value = self.value(depth + 1)?;
            props.push((key, value));
        }
    }
}

/// Appends the encoding of `value` to `out`.
pub fn encode(value: &Value, out: &mut BytesMut) {
    match value {
        Value::Number(n) => {
            out.put_u8(marker::NUMBER);
            out.put_f64(*n);
        }
        Value::Boolean(b) => {
            out.put_u8(marker::BOOLEAN);
            out.put_u8(u8::from(*b));
        }
        Value::String(s) => match u16::try_from(s.len()) {
            Ok(n) => {
                out.put_u8(marker::STRING);
                out.put_u16(n);
                out.put_slice(s.as_bytes());
            }
            Err(_) => {
                out.put_u8(marker::LONG_STRING);
                out.put_u32(u32::try_from(s.len()).unwrap_or(u32::MAX));
                out.put_slice(
                    s.as_bytes()
                        .get(..u32::MAX as usize)
                        .unwrap_or(s.as_bytes()),
                );
            }
        },
        Value::Object(props) => {
            out.put_u8(marker::OBJECT);
            encode_properties(props, out);
        }
        Value::Null => out.put_u8(marker::NULL),
        Value::Undefined => out.put_u8(marker::UNDEFINED),
        Value::EcmaArray(props) => {
            out.put_u8(marker::ECMA_ARRAY);
            out.put_u32(u32::try_from(props.len()).unwrap_or(u32::MAX));
            encode_properties(props, out);
        }
        Value::StrictArray(items) => {
            out.put_u8(marker::STRICT_ARRAY);
            out.put_u32(u32::try_from(items.len()).unwrap_or(u32::MAX));
            for item in items {
                encode(item, out);
            }
        }
        Value::Date { millis, tz } => {
            out.put_u8(marker::DATE);
            out.put_f64(*millis);
            out.put_i16(*tz);
        }
    }
}

fn encode_properties(props: &[(String, Value)], out: &mut BytesMut) {
    for (key, value) in props {
        // Keys are ours and short; a longer one would be cut rather than corrupt the stream.
        let key = key
            .as_bytes()
            .get(..usize::from(u16::MAX))
            .unwrap_or(key.as_bytes());
        out.put_u16(key.len() as u16);
        out.put_slice(key);
        encode(value, out);
    }
    out.put_u16(0);
    out.put_u8(marker::OBJECT_END);
}

/// Encodes a sequence of values (e.g. a command message body).
pub fn encode_all(values: &[Value]) -> BytesMut {
    let mut out = BytesMut::new();
    for v in values {
        encode(v, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(x: &str) -> Value {
        Value::String(x.into())
    }

    #[test]
    fn decodes_connect_command() {
        // "connect", 1.0, {app: "live", objectEncoding: 0}
        let mut b = vec![0x02, 0, 7];
        b.extend_from_slice(b"connect");
        b.push(0x00);
        b.extend_from_slice(&1.0f64.to_be_bytes());
        b.push(0x03);
        b.extend_from_slice(&[0, 3]);
        b.extend_from_slice(b"app");
        b.extend_from_slice(&[0x02, 0, 4]);
        b.extend_from_slice(b"live");
        b.extend_from_slice(&[0, 14]);
        b.extend_from_slice(b"objectEncoding");
        b.push(0x00);
        b.extend_from_slice(&0.0f64.to_be_bytes());
        b.extend_from_slice(&[0, 0, 9]);
        let v = decode_all(&b).unwrap();
        assert_eq!(v[0], s("connect"));
        assert_eq!(v[1], Value::Number(1.0));
        assert_eq!(v[2].get("app"), Some(&s("live")));
        assert_eq!(v[2].get("objectEncoding"), Some(&Value::Number(0.0)));
    }

    #[test]
    fn roundtrip_every_type() {
        let long = "x".repeat(70_000);
        let values = vec![
            Value::Number(-1.5),
            Value::Boolean(true),
            s("héllo"),
            Value::String(long),
            Value::Object(vec![
                ("a".into(), Value::Null),
                ("b".into(), Value::Undefined),
            ]),
            Value::EcmaArray(vec![("duration".into(), Value::Number(10.0))]),
            Value::StrictArray(vec![Value::Number(1.0), s("two")]),
            Value::Date {
                millis: 1.7e12,
                tz: -60,
            },
            Value::Null,
        ];
        let bytes = encode_all(&values);
        assert_eq!(decode_all(&bytes).unwrap(), values);
        let mut truncated = bytes.to_vec();
        truncated.push(0x11);
        assert_eq!(decode_lenient(&truncated), values);
        let (first, rest) = decode_first(&bytes).unwrap();
        assert_eq!(first, Value::Number(-1.5));
        assert_eq!(rest.len(), bytes.len() - 9);
    }

    #[test]
    fn ecma_array_without_end_marker() {
        let mut b = vec![0x08, 0, 0, 0, 1, 0, 1, b'k'];
        b.push(0x01);
        b.push(1);
        assert_eq!(
            decode_all(&b).unwrap(),
            vec![Value::EcmaArray(vec![("k".into(), Value::Boolean(true))])]
        );
    }

    #[test]
    fn limits() {
        let deep = [0x0A, 0, 0, 0, 1].repeat(MAX_DEPTH + 2);
        assert_eq!(decode_all(&deep), Err(Error::TooDeep));
        let many = vec![0x05; MAX_VALUES + 1];
        assert_eq!(decode_all(&many), Err(Error::TooMany));
        // a huge declared count does not allocate up front
        assert_eq!(
            decode_all(&[0x0A, 0xff, 0xff, 0xff, 0xff, 0x05]),
            Err(Error::Truncated)
        );
        assert_eq!(decode_all(&[0x02, 0, 5, b'a']), Err(Error::Truncated));
        assert_eq!(decode_all(&[0x11]), Err(Error::UnsupportedMarker(0x11)));
    }

    proptest! {
        #[test]
        fn does_not_panic(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let _ = decode_all(&data);
        }
    }
}
