//! Bencode (the BitTorrent encoding the rtpengine "ng" protocol uses): integers, byte strings,
//! lists and dictionaries, decoded from hostile datagrams and encoded for replies.
//!
//! The decoder is bounded: input size ([`MAX_INPUT`]), nesting depth ([`MAX_DEPTH`]) and item
//! count ([`MAX_ITEMS`]); a string's length is checked against the remaining input before any
//! allocation; integers are canonical (`i0e`, no leading zeros, no `-0`) and fit in `i64`.
//! Dictionaries are kept sorted by key (so encoding is canonical); a duplicated key is refused.
//! It never panics. `Debug` of a string that looks like an SDP with keys prints only its length.

use std::collections::BTreeMap;
use std::fmt;

use thiserror::Error;

/// Largest bencode document accepted (an ng datagram cannot be larger than a UDP payload).
pub const MAX_INPUT: usize = 65_535;
/// Deepest nesting of lists and dictionaries accepted (ng messages use 3).
pub const MAX_DEPTH: usize = 16;
/// Most values (of any kind) in one document.
pub const MAX_ITEMS: usize = 4096;

/// Why a bencode document was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BencodeError {
    /// The input ended inside a value.
    #[error("truncated bencode")]
    Truncated,
    /// A byte that cannot start or continue a value at this position.
    #[error("unexpected byte at offset {0}")]
    Unexpected(usize),
    /// An integer that is not canonical or does not fit in 64 bits.
    #[error("bad integer at offset {0}")]
    BadInteger(usize),
    /// A string length larger than the remaining input.
    #[error("string length out of range at offset {0}")]
    BadLength(usize),
    /// A dictionary key that is not a string, or a key given twice.
    #[error("bad dictionary key at offset {0}")]
    BadKey(usize),
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("nesting too deep")]
    TooDeep,
    /// More than [`MAX_ITEMS`] values or more than [`MAX_INPUT`] bytes.
    #[error("document too large")]
    TooLarge,
    /// Bytes after the end of the top-level value.
    #[error("trailing bytes after the value")]
    Trailing,
}

/// A bencode value.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    /// `i<n>e`.
    Int(i64),
    /// `<len>:<bytes>`.
    Bytes(Vec<u8>),
    /// `l...e`.
    List(Vec<Value>),
    /// `d...e`, keys sorted.
    Dict(BTreeMap<Vec<u8>, Value>),
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Bytes(b) => {
                if contains(b, b"inline:") || b.len() > 256 {
                    write!(f, "<{} bytes>", b.len())
                } else {
                    write!(f, "{:?}", String::from_utf8_lossy(b))
                }
            }
            Value::List(l) => f.debug_list().entries(l).finish(),
            Value::Dict(d) => f
                .debug_map()
                .entries(d.iter().map(|(k, v)| (String::from_utf8_lossy(k), v)))
                .finish(),
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

impl Value {
    /// A byte-string value from text.
    pub fn str(s: &str) -> Value {
        Value::Bytes(s.as_bytes().to_vec())
    }

    /// The bytes of a string value.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// A string value as UTF-8 text.
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// An integer value.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// A list value.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    /// A dictionary value.
    pub fn as_dict(&self) -> Option<&BTreeMap<Vec<u8>, Value>> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// Looks a key up in a dictionary value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_dict()?.get(key.as_bytes())
    }

    /// Decodes exactly one value from `input` (no trailing bytes).
    pub fn decode(input: &[u8]) -> Result<Value, BencodeError> {
        if input.len() > MAX_INPUT {
            return Err(BencodeError::TooLarge);
        }
        let mut d = Decoder {
            buf: input,
            pos: 0,
            items: 0,
        };
        let v = d.value(0)?;
        if d.pos != input.len() {
            return Err(BencodeError::Trailing);
        }
        Ok(v)
    }

    /// Encodes this value.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.encode_into(&mut out);
        out
    }

    /// Appends the encoding of this value to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Value::Int(i) => {
                out.push(b'i');
                out.extend_from_slice(i.to_string().as_bytes());
                out.push(b'e');
            }
            Value::Bytes(b) => encode_bytes(b, out),
            Value::List(l) => {
                out.push(b'l');
                for v in l {
                    v.encode_into(out);
                }
                out.push(b'e');
            }
            Value::Dict(d) => {
                out.push(b'd');
                for (k, v) in d {
                    encode_bytes(k, out);
                    v.encode_into(out);
                }
                out.push(b'e');
            }
        }
    }
}

fn encode_bytes(b: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(b);
}

/// A dictionary builder for replies, so reply code reads like the reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DictBuilder(BTreeMap<Vec<u8>, Value>);

impl DictBuilder {
    /// An empty dictionary.
    pub fn new() -> DictBuilder {
        DictBuilder::default()
    }

    /// Adds a string entry.
    pub fn str(mut self, k: &str, v: &str) -> DictBuilder {
        self.0.insert(k.as_bytes().to_vec(), Value::str(v));
        self
    }

    /// Adds an integer entry.
    pub fn int(mut self, k: &str, v: i64) -> DictBuilder {
        self.0.insert(k.as_bytes().to_vec(), Value::Int(v));
        self
    }

    /// Adds an entry of any value.
    pub fn value(mut self, k: &str, v: Value) -> DictBuilder {
        self.0.insert(k.as_bytes().to_vec(), v);
        self
    }

    /// The dictionary value.
    pub fn build(self) -> Value {
        Value::Dict(self.0)
    }
}

struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
    items: usize,
}

impl Decoder<'_> {
    fn peek(&self) -> Result<u8, BencodeError> {
        self.buf
            .get(self.pos)
            .copied()
            .ok_or(BencodeError::Truncated)
    }

    fn value(&mut self, depth: usize) -> Result<Value, BencodeError> {
        self.items += 1;
        if self.items > MAX_ITEMS {
            return Err(BencodeError::TooLarge);
        }
        match self.peek()? {
            b'i' => self.int().map(Value::Int),
            b'0'..=b'9' => self.bytes().map(|b| Value::Bytes(b.to_vec())),
            b'l' => {
                if depth >= MAX_DEPTH {
                    return Err(BencodeError::TooDeep);
                }
                self.pos += 1;
                let mut l = Vec::new();
                while self.peek()? != b'e' {
                    l.push(self.value(depth + 1)?);
                }
                self.pos += 1;
                Ok(Value::List(l))
            }
            b'd' => {
                if depth >= MAX_DEPTH {
                    return Err(BencodeError::TooDeep);
                }
                self.pos += 1;
                let mut d = BTreeMap::new();
                while self.peek()? != b'e' {
                    let at = self.pos;
                    if !self.peek()?.is_ascii_digit() {
                        return Err(BencodeError::BadKey(at));
                    }
                    let k = self.bytes()?.to_vec();
                    let v = self.value(depth + 1)?;
                    if d.insert(k, v).is_some() {
                        return Err(BencodeError::BadKey(at));
                    }
                }
                self.pos += 1;
                Ok(Value::Dict(d))
            }
            _ => Err(BencodeError::Unexpected(self.pos)),
        }
    }

    fn int(&mut self) -> Result<i64, BencodeError> {
        let start = self.pos;
        self.pos += 1; // 'i'
        let rest = &self.buf[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'e')
            .ok_or(BencodeError::Truncated)?;
        let digits = &rest[..end];
        let (neg, mag) = match digits.split_first() {
            Some((b'-', m)) => (true, m),
            _ => (false, digits),
        };
        let canonical = !mag.is_empty()
            && mag.len() <= 19
            && mag.iter().all(u8::is_ascii_digit)
            && (mag[0] != b'0' || (mag.len() == 1 && !neg));
        if !canonical {
            return Err(BencodeError::BadInteger(start));
        }
        let text = std::str::from_utf8(digits).map_err(|_| BencodeError::BadInteger(start))?;
        let n: i64 = text.parse().map_err(|_| BencodeError::BadInteger(start))?;
        self.pos += end + 1;
        Ok(n)
    }

    fn bytes(&mut self) -> Result<&[u8], BencodeError> {
        let start = self.pos;
        let rest = &self.buf[self.pos..];
        let colon = rest
            .iter()
            .take(8)
            .position(|&b| b == b':')
            .ok_or(if rest.len() < 8 {
                BencodeError::Truncated
            } else {
                BencodeError::BadLength(start)
            })?;
        let digits = &rest[..colon];
        if digits.is_empty()
            || !digits.iter().all(u8::is_ascii_digit)
            || (digits[0] == b'0' && digits.len() > 1)
        {
            return Err(BencodeError::BadLength(start));
        }
        let len: usize = std::str::from_utf8(digits)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(BencodeError::BadLength(start))?;
        let data_start = self.pos + colon + 1;
        let data_end = data_start
            .checked_add(len)
            .filter(|&e| e <= self.buf.len())
            .ok_or(BencodeError::BadLength(start))?;
        self.pos = data_end;
        Ok(&self.buf[data_start..data_end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let v = DictBuilder::new()
            .str("command", "ping")
            .int("n", -42)
            .value(
                "flags",
                Value::List(vec![Value::str("trust-address"), Value::Int(0)]),
            )
            .value("empty", Value::Dict(BTreeMap::new()))
            .build();
        let enc = v.encode();
        assert_eq!(
            enc,
            b"d7:command4:ping5:emptyde5:flagsl13:trust-addressi0ee1:ni-42ee".to_vec()
        );
        assert_eq!(Value::decode(&enc).unwrap(), v);
    }

    #[test]
    fn integers_are_canonical() {
        assert_eq!(Value::decode(b"i0e").unwrap(), Value::Int(0));
        assert_eq!(Value::decode(b"i-7e").unwrap(), Value::Int(-7));
        assert_eq!(
            Value::decode(b"i9223372036854775807e").unwrap(),
            Value::Int(i64::MAX)
        );
        assert_eq!(
            Value::decode(b"i-9223372036854775808e").unwrap(),
            Value::Int(i64::MIN)
        );
        for bad in [
            &b"i-0e"[..],
            b"i03e",
            b"ie",
            b"i-e",
            b"i1.5e",
            b"i9223372036854775808e",
            b"i99999999999999999999e",
            b"i+1e",
        ] {
            assert!(
                matches!(Value::decode(bad), Err(BencodeError::BadInteger(0))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn malformed_corpus() {
        let cases: &[(&[u8], BencodeError)] = &[
            (b"", BencodeError::Truncated),
            (b"i1", BencodeError::Truncated),
            (b"l", BencodeError::Truncated),
            (b"d", BencodeError::Truncated),
            (b"d3:key", BencodeError::Truncated),
            (b"5:abc", BencodeError::BadLength(0)),
            (b"99999999999:x", BencodeError::BadLength(0)),
            (b"01:a", BencodeError::BadLength(0)),
            (b"x", BencodeError::Unexpected(0)),
            (b"di1ei2ee", BencodeError::BadKey(1)),
            (b"d1:ai1e1:ai2ee", BencodeError::BadKey(7)),
            (b"i1ei2e", BencodeError::Trailing),
            (b"le ", BencodeError::Trailing),
        ];
        for (input, err) in cases {
            assert_eq!(
                Value::decode(input).as_ref(),
                Err(err),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn limits() {
        let deep = format!("{}{}", "l".repeat(MAX_DEPTH + 1), "e".repeat(MAX_DEPTH + 1));
        assert_eq!(Value::decode(deep.as_bytes()), Err(BencodeError::TooDeep));
        let ok = format!("{}{}", "l".repeat(MAX_DEPTH), "e".repeat(MAX_DEPTH));
        assert!(Value::decode(ok.as_bytes()).is_ok());
        let many = format!("l{}e", "i1e".repeat(MAX_ITEMS));
        assert_eq!(Value::decode(many.as_bytes()), Err(BencodeError::TooLarge));
        let huge = vec![b'l'; MAX_INPUT + 1];
        assert_eq!(Value::decode(&huge), Err(BencodeError::TooLarge));
        // A deep attack string never overflows the stack.
        let attack = "l".repeat(MAX_INPUT);
        assert_eq!(Value::decode(attack.as_bytes()), Err(BencodeError::TooDeep));
    }

    #[test]
    fn debug_hides_sdp_keys() {
        let v = Value::str("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:c2VjcmV0");
        assert_eq!(format!("{v:?}"), "<50 bytes>");
        assert_eq!(format!("{:?}", Value::str("ok")), "\"ok\"");
    }
}
