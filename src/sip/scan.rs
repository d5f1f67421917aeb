//! Byte-level building blocks of the RFC 3261 grammar (section 25.1): character classes, linear
//! white space, quoted strings, escapes and list splitting. Every other SIP module is built from
//! these, so the grammar's corner cases are decided in one place.

/// True for the RFC 3261 `token` characters (alphanum and `-.!%*_+`'~`).
pub fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

/// True when `s` is a non-empty RFC 3261 `token`.
pub fn is_token_str(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_token(b))
}

/// True for RFC 3261 `unreserved` (alphanum and `mark`).
pub fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
        )
}

/// True for RFC 3261 `reserved`.
pub fn is_reserved(b: u8) -> bool {
    matches!(
        b,
        b';' | b'/' | b'?' | b':' | b'@' | b'&' | b'=' | b'+' | b'$' | b','
    )
}

/// True for space or horizontal tab.
pub fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Strips leading and trailing SP/HTAB (header values are stored unfolded, so no CRLF remains).
pub fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_wsp(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|&b| !is_wsp(b)).map_or(start, |e| e + 1);
    s.get(start..end).unwrap_or(&[])
}

/// Index of the first non-SP/HTAB byte at or after `i`.
pub fn skip_wsp(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && is_wsp(s[i]) {
        i += 1;
    }
    i
}

/// Value of one hex digit.
pub fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Checks that every `%` in `s` starts a valid `%HH` escape and every other byte satisfies
/// `allowed`. This is the shape of every escaped URI component.
pub fn check_escaped(s: &[u8], allowed: impl Fn(u8) -> bool) -> bool {
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            match (s.get(i + 1), s.get(i + 2)) {
                (Some(&a), Some(&b)) if hex_val(a).is_some() && hex_val(b).is_some() => i += 3,
                _ => return false,
            }
        } else if allowed(s[i]) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// Decodes `%HH` escapes (after [`check_escaped`] succeeded); bytes may include NUL (RFC 4475
/// escnull), so the result is bytes, not a string.
pub fn unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            if let (Some(a), Some(b)) = (
                s.get(i + 1).copied().and_then(hex_val),
                s.get(i + 2).copied().and_then(hex_val),
            ) {
                out.push(a << 4 | b);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// Parses a `quoted-string` starting at `s[i] == '"'`; returns the index just past the closing
/// quote. Quoted pairs may escape any byte except CR and LF (RFC 3261 25.1).
pub fn quoted_end(s: &[u8], i: usize) -> Option<usize> {
    if s.get(i) != Some(&b'"') {
        return None;
    }
    let mut j = i + 1;
    while j < s.len() {
        match s[j] {
            b'"' => return Some(j + 1),
            b'\\' => {
                let next = *s.get(j + 1)?;
                if next == b'\r' || next == b'\n' {
                    return None;
                }
                j += 2;
            }
            b'\r' | b'\n' => return None,
            _ => j += 1,
        }
    }
    None
}

/// Removes the quotes and quoted-pair backslashes from a complete quoted string.
pub fn unquote(q: &[u8]) -> Vec<u8> {
    let inner = q.get(1..q.len().saturating_sub(1)).unwrap_or(&[]);
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        if inner[i] == b'\\' && i + 1 < inner.len() {
            out.push(inner[i + 1]);
            i += 2;
        } else {
            out.push(inner[i]);
            i += 1;
        }
    }
    out
}

/// Splits a header value at top-level commas, ignoring commas inside quoted strings and `<...>`.
/// Returns `None` on an unterminated quote or angle bracket. Elements are trimmed; empty elements
/// are kept so callers can reject them (RFC 4475 badinv01).
pub fn split_list(s: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    let mut in_angle = false;
    while i < s.len() {
        match s[i] {
            b'"' => {
                i = quoted_end(s, i)?;
                continue;
            }
            b'<' if !in_angle => in_angle = true,
            b'>' if in_angle => in_angle = false,
            b',' if !in_angle => {
                out.push(trim(&s[start..i]));
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if in_angle {
        return None;
    }
    out.push(trim(&s[start..]));
    Some(out)
}

/// Splits `s` at top-level occurrences of `sep`, skipping quoted strings (for `;` parameters
/// whose values may be quoted). Returns `None` on an unterminated quote.
pub fn split_unquoted(s: &[u8], sep: u8) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'"' {
            i = quoted_end(s, i)?;
            continue;
        }
        if s[i] == sep {
            out.push(&s[start..i]);
            start = i + 1;
        }
        i += 1;
    }
    out.push(&s[start..]);
    Some(out)
}

/// One `;name[=value]` parameter of a header (not of a URI): name is a token, value a token,
/// a quoted string or (for `received`/`maddr`) a host. Names are compared case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// The parameter name as received.
    pub name: String,
    /// The value as received (quotes kept), if any.
    pub value: Option<Vec<u8>>,
}

impl Param {
    /// Builds a parameter from a name and an optional raw value.
    pub fn new(name: &str, value: Option<&[u8]>) -> Self {
        Param {
            name: name.to_string(),
            value: value.map(<[u8]>::to_vec),
        }
    }
}

/// True for bytes allowed in an unquoted generic-param value: token chars plus the host
/// characters `:` `[` `]` (IPv6 `received`/`maddr`).
fn is_gen_value(b: u8) -> bool {
    is_token(b) || b == b':' || b == b'[' || b == b']'
}

/// Parses the `*( SEMI generic-param )` tail of a header element (`s` starts after the first
/// `;`, or is empty). LWS around `;` and `=` is allowed (RFC 4475 wsinv); empty parameters are
/// rejected (badinv01).
pub fn parse_params(s: &[u8]) -> Option<Vec<Param>> {
    let mut out = Vec::new();
    if trim(s).is_empty() {
        return Some(out);
    }
    for part in split_unquoted(s, b';')? {
        let part = trim(part);
        let (name, value) = match part.iter().position(|&b| b == b'=') {
            Some(eq) => (trim(&part[..eq]), Some(trim(&part[eq + 1..]))),
            None => (part, None),
        };
        if !is_token_str(name) {
            return None;
        }
        if let Some(v) = value {
            let ok = if v.first() == Some(&b'"') {
                quoted_end(v, 0) == Some(v.len())
            } else {
                !v.is_empty() && v.iter().all(|&b| is_gen_value(b))
            };
            if !ok {
                return None;
            }
        }
        let name = std::str::from_utf8(name).ok()?;
        out.push(Param::new(name, value));
    }
    Some(out)
}

/// Finds a parameter by case-insensitive name.
pub fn find_param<'a>(params: &'a [Param], name: &str) -> Option<&'a Param> {
    params.iter().find(|p| p.name.eq_ignore_ascii_case(name))
}

/// Writes `;name[=value]` for each parameter.
pub fn write_params(out: &mut Vec<u8>, params: &[Param]) {
    for p in params {
        out.push(b';');
        out.extend_from_slice(p.name.as_bytes());
        if let Some(v) = &p.value {
            out.push(b'=');
            out.extend_from_slice(v);
        }
    }
}

/// Parses a decimal number of at most `max_digits` digits that fits `u32`; rejects signs,
/// empty input and overflow (RFC 4475 ncl, scalar02).
pub fn parse_u32(s: &[u8], max_digits: usize) -> Option<u32> {
    if s.is_empty() || s.len() > max_digits || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    u32::try_from(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_classes() {
        assert!(is_token_str(b"!interesting-Method0123456789_*+`.%indeed'~"));
        assert!(!is_token_str(b"a b"));
        assert!(!is_token_str(b""));
    }

    #[test]
    fn escapes() {
        assert!(check_escaped(b"null-%00-null", is_unreserved));
        assert!(!check_escaped(b"bad%G0", is_unreserved));
        assert!(!check_escaped(b"bad%4", is_unreserved));
        assert_eq!(unescape(b"%75se%72"), b"user");
        assert_eq!(unescape(b"%00%00"), vec![0, 0]);
    }

    #[test]
    fn quoted() {
        assert_eq!(quoted_end(br#""a\"b" x"#, 0), Some(6));
        assert_eq!(quoted_end(br#""open"#, 0), None);
        assert_eq!(
            unquote(br#""J Rosenberg \\\"""#),
            br#"J Rosenberg \""#.to_vec()
        );
    }

    #[test]
    fn list_split_respects_quotes_and_angles() {
        let v = split_list(br#""a, b" <sip:x@y;p=1,2>, <sip:z@w>"#).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[1], b"<sip:z@w>");
        assert!(split_list(b"<sip:x@y").is_none());
        assert_eq!(split_list(b"a,,b").unwrap().len(), 3);
    }

    #[test]
    fn params() {
        let p = parse_params(b" newparam =  newvalue ; secondparam ; q = 0.33").unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].value.as_deref(), Some(&b"newvalue"[..]));
        assert!(parse_params(b";;").is_none());
        assert!(parse_params(b"a=").is_none());
        assert!(parse_params(b"received=[2001:db8::1]").is_some());
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_u32(b"0068", 10), Some(68));
        assert_eq!(parse_u32(b"-999", 10), None);
        assert_eq!(parse_u32(b"36893488147419103232", 30), None);
        assert_eq!(parse_u32(b"4294967296", 10), None);
        assert_eq!(parse_u32(b"", 10), None);
    }
}
