//! The ng client shared by the load benches (`relay_load`, `dtls_load`): a minimal bencode codec
//! and a UDP request/reply client. Deliberately independent of srtp-edge's own ng code, so the
//! benches also check that srtp-edge speaks ng as rtpengine does. Each bench uses a subset.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

// Minimal bencode (requests are dicts of strings and lists; replies are parsed for strings).

pub enum B {
    S(Vec<u8>),
    I(i64),
    L(Vec<B>),
    D(BTreeMap<Vec<u8>, B>),
}

pub fn benc(v: &B, out: &mut Vec<u8>) {
    match v {
        B::S(s) => {
            out.extend_from_slice(s.len().to_string().as_bytes());
            out.push(b':');
            out.extend_from_slice(s);
        }
        B::I(i) => out.extend_from_slice(format!("i{i}e").as_bytes()),
        B::L(l) => {
            out.push(b'l');
            l.iter().for_each(|x| benc(x, out));
            out.push(b'e');
        }
        B::D(d) => {
            out.push(b'd');
            for (k, x) in d {
                benc(&B::S(k.clone()), out);
                benc(x, out);
            }
            out.push(b'e');
        }
    }
}

pub fn bdec(s: &[u8], i: &mut usize) -> Option<B> {
    match *s.get(*i)? {
        b'i' => {
            let end = *i + s[*i..].iter().position(|&c| c == b'e')?;
            let n = std::str::from_utf8(&s[*i + 1..end]).ok()?.parse().ok()?;
            *i = end + 1;
            Some(B::I(n))
        }
        b'l' => {
            *i += 1;
            let mut l = Vec::new();
            while *s.get(*i)? != b'e' {
                l.push(bdec(s, i)?);
            }
            *i += 1;
            Some(B::L(l))
        }
        b'd' => {
            *i += 1;
            let mut d = BTreeMap::new();
            while *s.get(*i)? != b'e' {
                let B::S(k) = bdec(s, i)? else { return None };
                let v = bdec(s, i)?;
                d.insert(k, v);
            }
            *i += 1;
            Some(B::D(d))
        }
        b'0'..=b'9' => {
            let colon = *i + s[*i..].iter().position(|&c| c == b':')?;
            let n: usize = std::str::from_utf8(&s[*i..colon]).ok()?.parse().ok()?;
            let start = colon + 1;
            let bytes = s.get(start..start.checked_add(n)?)?.to_vec();
            *i = start + n;
            Some(B::S(bytes))
        }
        _ => None,
    }
}

pub fn s(x: &str) -> B {
    B::S(x.as_bytes().to_vec())
}

pub type Dict = BTreeMap<Vec<u8>, B>;

pub struct Ng {
    /// The socket connected to the relay's ng port (read timeout adjustable by the caller).
    pub sock: UdpSocket,
}

impl Ng {
    pub fn new(addr: SocketAddr) -> io::Result<Ng> {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        sock.connect(addr)?;
        sock.set_read_timeout(Some(Duration::from_millis(500)))?;
        Ok(Ng { sock })
    }

    /// Sends a command and returns the reply's dict, retransmitting (same cookie) on timeout.
    pub fn call(&mut self, pairs: Vec<(&str, B)>) -> Result<Dict, String> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let cookie = format!(
            "ng{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut d = BTreeMap::new();
        for (k, v) in pairs {
            d.insert(k.as_bytes().to_vec(), v);
        }
        let mut msg = format!("{cookie} ").into_bytes();
        benc(&B::D(d), &mut msg);
        let mut buf = vec![0u8; 65536];
        for _ in 0..10 {
            self.sock.send(&msg).map_err(|e| e.to_string())?;
            let deadline = Instant::now() + Duration::from_millis(500);
            while Instant::now() < deadline {
                let Ok(n) = self.sock.recv(&mut buf) else {
                    break;
                };
                let r = &buf[..n];
                let Some(sp) = r.iter().position(|&c| c == b' ') else {
                    continue;
                };
                if &r[..sp] != cookie.as_bytes() {
                    continue;
                }
                let mut i = sp + 1;
                return match bdec(r, &mut i) {
                    Some(B::D(d)) => Ok(d),
                    _ => Err("undecodable ng reply".into()),
                };
            }
        }
        Err("ng request timed out".into())
    }

    pub fn ok(&mut self, what: &str, pairs: Vec<(&str, B)>) -> Result<String, String> {
        let r = self.call(pairs)?;
        if get_str(&r, "result").as_deref() != Some("ok") {
            return Err(format!(
                "{what}: {:?} {:?}",
                get_str(&r, "result"),
                get_str(&r, "error-reason")
            ));
        }
        get_str(&r, "sdp").ok_or_else(|| format!("{what} reply without sdp"))
    }
}

pub fn get_str(d: &Dict, k: &str) -> Option<String> {
    match d.get(k.as_bytes()) {
        Some(B::S(v)) => Some(String::from_utf8_lossy(v).into_owned()),
        _ => None,
    }
}
