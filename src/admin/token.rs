//! The admin bearer token: read from `admin.token_file`, or generated once into the state
//! directory (mode 0600). Compared in constant time; never logged.

use std::fmt;
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;

/// A bearer token. Its `Debug` does not show it.
#[derive(Clone)]
pub struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// Wraps a token value (trimmed); empty tokens are refused.
    pub fn new(value: &str) -> Result<Token, String> {
        let v = value.trim();
        if v.len() < 16 {
            return Err("the admin token must be at least 16 characters".into());
        }
        if !v.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the admin token must be printable ASCII without spaces".into());
        }
        Ok(Token(v.to_string()))
    }

    /// Reads the configured token file, or creates `<state_dir>/admin-token` with 32 random
    /// bytes (hex) on first run. Returns the token and the file it came from.
    pub fn load_or_generate(
        configured: Option<&Path>,
        state_dir: &Path,
    ) -> Result<(Token, PathBuf), String> {
        let path = configured
            .map(Path::to_path_buf)
            .unwrap_or_else(|| state_dir.join("admin-token"));
        if configured.is_none() && !path.exists() {
            let mut raw = [0u8; 32];
            getrandom::fill(&mut raw).map_err(|e| format!("no OS randomness: {e}"))?;
            crate::tls::certs::write_private(&path, format!("{}\n", hex::encode(raw)).as_bytes())?;
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let t = Token::new(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok((t, path))
    }

    /// Checks an `Authorization` header value in constant time (for equal lengths).
    pub fn check_header(&self, header: Option<&[u8]>) -> bool {
        let Some(h) = header else { return false };
        let Some(presented) = h.strip_prefix(b"Bearer ") else {
            return false;
        };
        presented.ct_eq(self.0.as_bytes()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_check() {
        let t = Token::new("0123456789abcdef0123").unwrap();
        assert!(t.check_header(Some(b"Bearer 0123456789abcdef0123")));
        assert!(!t.check_header(Some(b"Bearer 0123456789abcdef012")));
        assert!(!t.check_header(Some(b"bearer 0123456789abcdef0123")));
        assert!(!t.check_header(Some(b"0123456789abcdef0123")));
        assert!(!t.check_header(None));
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
        assert!(Token::new("short").is_err());
    }

    #[test]
    fn generated_once() {
        let d = tempfile::tempdir().unwrap();
        let (a, p) = Token::load_or_generate(None, d.path()).unwrap();
        let (b, _) = Token::load_or_generate(None, d.path()).unwrap();
        assert_eq!(a.0, b.0);
        assert_eq!(a.0.len(), 64);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
