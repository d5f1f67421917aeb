//! Who starts the DTLS handshake, and when a leg needs a new one: SDP `a=setup` (RFC 4145 as
//! used by RFC 5763 section 5 and RFC 8842 section 5) and `a=tls-id` (RFC 8842 section 4).
//!
//! The rules live here, apart from the handshake itself, so the SIP B2BUA and the ng control
//! plane decide roles and re-keys the same way.

use std::fmt;

use super::fingerprint::PeerFingerprints;

/// A DTLS role on a leg: the client sends the ClientHello.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// DTLS client (`a=setup:active`).
    Client,
    /// DTLS server (`a=setup:passive`).
    Server,
}

impl Role {
    /// The `a=setup` value that announces this role in an answer or a subsequent offer.
    pub const fn setup(self) -> Setup {
        match self {
            Role::Client => Setup::Active,
            Role::Server => Setup::Passive,
        }
    }
}

/// An `a=setup` value (RFC 4145 section 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Setup {
    /// The endpoint will initiate the connection (DTLS client).
    Active,
    /// The endpoint will accept a connection (DTLS server).
    Passive,
    /// Either; the answerer decides. Offerers MUST use it in an initial offer (RFC 5763).
    ActPass,
    /// No connection for now.
    HoldConn,
}

/// Why `a=setup` values do not give a usable role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    /// The value is not one of the four RFC 4145 tokens.
    #[error("a=setup value is not active, passive, actpass or holdconn")]
    Unknown,
    /// The peer put the connection on hold: no handshake until a new offer.
    #[error("a=setup:holdconn: no DTLS connection requested")]
    HoldConn,
    /// The answer does not pick one role compatible with the offer.
    #[error("a=setup:{answer} is not a valid answer to a=setup:{offer}")]
    InvalidAnswer {
        /// What was offered.
        offer: Setup,
        /// What came back.
        answer: Setup,
    },
}

impl Setup {
    /// Parses the value of an `a=setup:` attribute (surrounding whitespace ignored; tokens are
    /// matched case-insensitively to tolerate sloppy peers).
    pub fn parse(value: &str) -> Result<Setup, SetupError> {
        let v = value.trim();
        [
            Setup::Active,
            Setup::Passive,
            Setup::ActPass,
            Setup::HoldConn,
        ]
        .into_iter()
        .find(|s| s.as_str().eq_ignore_ascii_case(v))
        .ok_or(SetupError::Unknown)
    }

    /// The SDP token.
    pub const fn as_str(self) -> &'static str {
        match self {
            Setup::Active => "active",
            Setup::Passive => "passive",
            Setup::ActPass => "actpass",
            Setup::HoldConn => "holdconn",
        }
    }
}

impl fmt::Display for Setup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `a=setup` we put in every offer, initial or subsequent: `actpass` (RFC 5763 section 5,
/// RFC 8842 sections 5.2 and 5.5). Whether a running association is kept is said by `a=tls-id`
/// and the fingerprint, not by the setup value.
pub const fn offer_setup() -> Setup {
    Setup::ActPass
}

/// We answer a peer's offer: returns the `a=setup` for our answer and our DTLS role. `current`
/// is our role in an association the answer keeps (same tls-id and fingerprints); an `actpass`
/// offer then keeps it (RFC 8842 section 5.3), and otherwise makes us the client (`active`,
/// RFC 5763 section 5) so the handshake starts without waiting for the peer. An explicit
/// `active` or `passive` offer decides for us.
pub fn answer_setup(offer: Setup, current: Option<Role>) -> Result<(Setup, Role), SetupError> {
    let role = match (offer, current) {
        (Setup::ActPass, Some(kept)) => kept,
        (Setup::ActPass, None) | (Setup::Passive, _) => Role::Client,
        (Setup::Active, _) => Role::Server,
        (Setup::HoldConn, _) => return Err(SetupError::HoldConn),
    };
    Ok((role.setup(), role))
}

/// Our role once the peer answered our offer. The answer must be `active` or `passive`
/// (RFC 8842 section 5.3) and compatible with what we offered.
pub fn role_from_answer(offer: Setup, answer: Setup) -> Result<Role, SetupError> {
    let role = match answer {
        Setup::Active => Role::Server,
        Setup::Passive => Role::Client,
        Setup::HoldConn => return Err(SetupError::HoldConn),
        Setup::ActPass => return Err(SetupError::InvalidAnswer { offer, answer }),
    };
    match offer {
        Setup::ActPass => Ok(role),
        Setup::Active if role == Role::Client => Ok(role),
        Setup::Passive if role == Role::Server => Ok(role),
        _ => Err(SetupError::InvalidAnswer { offer, answer }),
    }
}

/// An `a=tls-id` value (RFC 8842 section 4): 20 to 120 characters from `A-Za-z0-9+/-_`. A new
/// value from the peer means a new DTLS association.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TlsId(String);

/// Length of the tls-id values srtp-edge generates (32 characters, 192 random bits).
const GENERATED_TLS_ID_LEN: usize = 32;

const TLS_ID_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Why an `a=tls-id` value was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TlsIdError {
    /// Shorter than 20 or longer than 120 characters.
    #[error("a=tls-id must be 20 to 120 characters")]
    Length,
    /// A character outside `A-Za-z0-9+/-_`.
    #[error("a=tls-id has a character outside A-Za-z0-9+/-_")]
    Character,
    /// The system random source failed.
    #[error("no randomness for a=tls-id")]
    Random,
}

impl TlsId {
    /// A fresh random tls-id for a new association we start (RFC 8842 section 4: unique per
    /// association, with enough entropy not to repeat).
    pub fn generate() -> Result<TlsId, TlsIdError> {
        Self::generate_with(&mut crate::rand::OsRandom)
    }

    /// [`generate`](Self::generate) from an injected random source (the call table's).
    pub fn generate_with(rng: &mut dyn crate::rand::Random) -> Result<TlsId, TlsIdError> {
        let mut raw = [0u8; GENERATED_TLS_ID_LEN];
        rng.fill(&mut raw).map_err(|_| TlsIdError::Random)?;
        let s = raw
            .iter()
            .map(|b| char::from(TLS_ID_ALPHABET[usize::from(b & 63)]))
            .collect();
        Ok(TlsId(s))
    }

    /// Parses and validates a peer's `a=tls-id` value.
    pub fn parse(value: &str) -> Result<TlsId, TlsIdError> {
        let v = value.trim();
        if !(20..=120).contains(&v.len()) {
            return Err(TlsIdError::Length);
        }
        if !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_'))
        {
            return Err(TlsIdError::Character);
        }
        Ok(TlsId(v.to_owned()))
    }

    /// The value for `a=tls-id:`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TlsId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TlsId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TlsId({})", self.0)
    }
}

/// What the peer's SDP says about the DTLS association of a leg.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteDtls {
    /// The peer's `a=tls-id`, if it sent one (RFC 8842 peers do; older peers do not).
    pub tls_id: Option<TlsId>,
    /// The peer's `a=fingerprint` set.
    pub fingerprints: PeerFingerprints,
    /// Our DTLS role as negotiated from `a=setup`.
    pub role: Role,
}

impl RemoteDtls {
    /// True if an updated offer or answer asks for a new DTLS association (a new handshake that
    /// re-keys the leg): a new or removed tls-id, a changed fingerprint set (RFC 8842 section 5
    /// and, for peers without tls-id, RFC 5763 section 6.7.1), or a changed role.
    pub fn needs_new_handshake(&self, updated: &RemoteDtls) -> bool {
        self.tls_id != updated.tls_id
            || !self.fingerprints.same_set(&updated.fingerprints)
            || self.role != updated.role
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtls::fingerprint::{Fingerprint, HashFunction};

    #[test]
    fn parses_setup_tokens() {
        assert_eq!(Setup::parse("actpass"), Ok(Setup::ActPass));
        assert_eq!(Setup::parse(" ACTIVE\r"), Ok(Setup::Active));
        assert_eq!(Setup::parse("passive"), Ok(Setup::Passive));
        assert_eq!(Setup::parse("holdconn"), Ok(Setup::HoldConn));
        assert_eq!(Setup::parse("both"), Err(SetupError::Unknown));
        assert_eq!(Setup::parse(""), Err(SetupError::Unknown));
        for s in [
            Setup::Active,
            Setup::Passive,
            Setup::ActPass,
            Setup::HoldConn,
        ] {
            assert_eq!(Setup::parse(&s.to_string()), Ok(s));
        }
    }

    #[test]
    fn answerer_roles() {
        let ok = |s, r| Ok((s, r));
        assert_eq!(
            answer_setup(Setup::ActPass, None),
            ok(Setup::Active, Role::Client)
        );
        // A kept association keeps its roles.
        let kept = answer_setup(Setup::ActPass, Some(Role::Server));
        assert_eq!(kept, ok(Setup::Passive, Role::Server));
        let kept = answer_setup(Setup::ActPass, Some(Role::Client));
        assert_eq!(kept, ok(Setup::Active, Role::Client));
        let explicit = answer_setup(Setup::Passive, Some(Role::Server));
        assert_eq!(explicit, ok(Setup::Active, Role::Client));
        assert_eq!(
            answer_setup(Setup::Active, None),
            ok(Setup::Passive, Role::Server)
        );
        assert_eq!(
            answer_setup(Setup::HoldConn, None),
            Err(SetupError::HoldConn)
        );
    }

    #[test]
    fn offerer_roles() {
        assert_eq!(offer_setup(), Setup::ActPass);
        let role = |o, a| role_from_answer(o, a);
        assert_eq!(role(Setup::ActPass, Setup::Active), Ok(Role::Server));
        assert_eq!(role(Setup::ActPass, Setup::Passive), Ok(Role::Client));
        assert_eq!(role(Setup::Active, Setup::Passive), Ok(Role::Client));
        assert_eq!(role(Setup::Passive, Setup::Active), Ok(Role::Server));
        for (o, a) in [
            (Setup::ActPass, Setup::ActPass),
            (Setup::Active, Setup::Active),
            (Setup::Passive, Setup::Passive),
        ] {
            assert_eq!(
                role(o, a),
                Err(SetupError::InvalidAnswer {
                    offer: o,
                    answer: a
                })
            );
        }
        assert_eq!(
            role(Setup::ActPass, Setup::HoldConn),
            Err(SetupError::HoldConn)
        );
    }

    #[test]
    fn tls_id_generation_and_parsing() {
        let a = TlsId::generate().unwrap();
        let b = TlsId::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), GENERATED_TLS_ID_LEN);
        assert_eq!(TlsId::parse(a.as_str()), Ok(a.clone()));
        assert_eq!(
            TlsId::parse("abc-_+/0123456789ABCD").map(|t| t.to_string()),
            Ok("abc-_+/0123456789ABCD".to_owned())
        );
        assert_eq!(TlsId::parse("short"), Err(TlsIdError::Length));
        assert_eq!(TlsId::parse(&"a".repeat(121)), Err(TlsIdError::Length));
        assert_eq!(TlsId::parse(&"a".repeat(120)).map(|_| ()), Ok(()));
        assert_eq!(
            TlsId::parse("abcdefghij klmnopqrstu"),
            Err(TlsIdError::Character)
        );
        assert_eq!(
            TlsId::parse("abcdefghijklmnopqrstué"),
            Err(TlsIdError::Character)
        );
    }

    #[test]
    fn change_detection() {
        let fp = |c: &[u8]| {
            PeerFingerprints::from_fingerprints([Fingerprint::of_certificate(
                HashFunction::Sha256,
                c,
            )])
            .unwrap()
        };
        let base = RemoteDtls {
            tls_id: Some(TlsId::parse("aaaaaaaaaaaaaaaaaaaaaaaa").unwrap()),
            fingerprints: fp(b"one"),
            role: Role::Client,
        };
        assert!(!base.needs_new_handshake(&base.clone()));

        let mut new_id = base.clone();
        new_id.tls_id = Some(TlsId::parse("bbbbbbbbbbbbbbbbbbbbbbbb").unwrap());
        assert!(base.needs_new_handshake(&new_id));

        let mut no_id = base.clone();
        no_id.tls_id = None;
        assert!(base.needs_new_handshake(&no_id));

        let mut new_fp = base.clone();
        new_fp.fingerprints = fp(b"two");
        assert!(base.needs_new_handshake(&new_fp));

        let mut new_role = base.clone();
        new_role.role = Role::Server;
        assert!(base.needs_new_handshake(&new_role));

        // A legacy peer without tls-id that repeats its fingerprint keeps the association.
        let legacy = RemoteDtls {
            tls_id: None,
            ..base.clone()
        };
        assert!(!legacy.needs_new_handshake(&legacy.clone()));
    }
}
