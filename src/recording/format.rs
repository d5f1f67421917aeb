//! The sealed recording file format, as pure code over bytes (specified for independent readers
//! in `docs/recording-format.md`; keep both in step).
//!
//! ```text
//! "SRTPEREC"  version u16=1  header_len u32  header (JSON)          <- AAD of every chunk
//! keyblock_len u16  keyblock (JSON, space-padded; all zero bytes once shredded)
//! { chunk_len u32  AES-256-GCM(ciphertext || tag) }*                 <- the last one flagged final
//! ```
//!
//! Integers are big-endian. Chunk `i` is sealed under the recording's data key with nonce
//! `nonce_prefix (7 bytes) || i (u32) || final (0x00 or 0x01)` (the STREAM construction of
//! Hoang-Reyhanitabar-Rogaway-Vizár, as in Tink's streaming AEAD), so a flipped bit, a reordered
//! or dropped chunk, and a cut-off end are each detected. The key block is outside the AAD so that
//! rotation can re-wrap the data key without touching the audio; it is authenticated by the KEK's
//! own AEAD, whose associated data binds it to this recording's id ([`crate::keys::wrap_aad`]).

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::keys::{KekId, WrappedKey, KEY_LEN};

/// File magic.
pub const MAGIC: &[u8; 8] = b"SRTPEREC";
/// Format version this code writes and reads.
pub const VERSION: u16 = 1;
/// Bytes before the header: magic, version, header length.
pub const PREFIX_LEN: usize = 14;
/// Largest header accepted.
pub const MAX_HEADER: usize = 64 * 1024;
/// Size of the key block this code writes.
pub const KEYBLOCK_LEN: usize = 256;
/// Largest key block accepted.
pub const MAX_KEYBLOCK: usize = 4096;
/// Largest chunk plaintext written or accepted.
pub const MAX_CHUNK_PLAIN: usize = 1 << 20;
/// GCM tag length.
pub const TAG_LEN: usize = 16;
/// Length of the nonce prefix.
pub const NONCE_PREFIX_LEN: usize = 7;
/// Bytes before a frame's payload.
pub const FRAME_HEADER_LEN: usize = 14;

/// One track's place in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackInfo {
    /// The `track` byte of its frames.
    pub track: u8,
    /// `caller` (the party that sent the first offer) or `callee`.
    pub role: String,
    /// `left` or `right` in an exported WAV.
    pub channel: String,
}

/// Redacted facts about the call: never a full number or a raw Call-ID.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallMeta {
    /// `sip` (B2BUA route) or `ng`.
    pub source: String,
    /// First 16 hex digits of SHA-256(Call-ID): lets an operator find a call's recording.
    pub call_id_sha256: String,
    /// Caller, masked to its last characters.
    #[serde(default)]
    pub from: String,
    /// Callee, masked to its last characters.
    #[serde(default)]
    pub to: String,
    /// The trunk the call came from (SIP).
    #[serde(default)]
    pub trunk: String,
    /// The route that asked for the recording (SIP).
    #[serde(default)]
    pub route: String,
}

/// The header (JSON), authenticated as associated data of every chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Always `srtp-edge recording`.
    pub format: String,
    /// Always 1.
    pub version: u16,
    /// The recording id (32 hex digits), also the file name and the wrap's object id.
    pub id: String,
    /// Always `recordings`.
    pub class: String,
    /// The tenant whose KEK wraps the data key.
    pub tenant: String,
    /// `PCMU`, `PCMA` or `L16` (16-bit big-endian linear PCM, mono per frame).
    pub codec: String,
    /// Samples per second.
    pub sample_rate: u32,
    /// The tracks.
    pub tracks: Vec<TrackInfo>,
    /// Wall-clock start, Unix milliseconds; frame times count from it.
    pub start_unix_ms: u64,
    /// Audio per chunk, milliseconds (a target, not a promise).
    pub chunk_ms: u32,
    /// 7 bytes, hex: the nonce prefix of this file's chunks.
    pub nonce_prefix: String,
    /// Redacted call metadata.
    pub call: CallMeta,
}

/// The key block (JSON, padded with spaces to its fixed length).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyBlock {
    /// `provider:recordings/tenant/vN`.
    pub kek: String,
    /// Base64 (standard, padded) of nonce(12) || encrypted data key(32) || tag(16).
    pub wrapped_key: String,
}

impl KeyBlock {
    /// From a wrapped key.
    pub fn from_wrapped(w: &WrappedKey) -> KeyBlock {
        use base64::Engine as _;
        KeyBlock {
            kek: w.kek.to_string(),
            wrapped_key: base64::engine::general_purpose::STANDARD.encode(&w.bytes),
        }
    }

    /// To a wrapped key.
    pub fn wrapped(&self) -> Result<WrappedKey, FormatError> {
        use base64::Engine as _;
        let kek = KekId::parse(&self.kek).map_err(|e| FormatError::BadKeyBlock(e.to_string()))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.wrapped_key)
            .map_err(|_| FormatError::BadKeyBlock("wrapped_key is not base64".into()))?;
        Ok(WrappedKey { kek, bytes })
    }

    /// The padded bytes written to the file.
    pub fn encode(&self) -> Result<Vec<u8>, FormatError> {
        let mut b =
            serde_json::to_vec(self).map_err(|e| FormatError::BadKeyBlock(e.to_string()))?;
        if b.len() > KEYBLOCK_LEN {
            return Err(FormatError::BadKeyBlock("key block too long".into()));
        }
        b.resize(KEYBLOCK_LEN, b' ');
        Ok(b)
    }
}

/// What is wrong with a recording file. Each names the place and the likely cause.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FormatError {
    /// Not a recording.
    #[error("not an srtp-edge recording (bad magic)")]
    BadMagic,
    /// A version this build cannot read.
    #[error("format version {0} is not supported (this build reads version 1)")]
    Version(u16),
    /// The file ends inside its header or key block.
    #[error("the file ends inside its header")]
    ShortHeader,
    /// The header is not the JSON this version defines.
    #[error("header: {0}")]
    BadHeader(String),
    /// The key block is unreadable.
    #[error("key block: {0}")]
    BadKeyBlock(String),
    /// The data key was destroyed (crypto-shredding): the audio can never be read again.
    #[error("the recording was shredded: its data key is destroyed")]
    Shredded,
    /// A chunk length beyond the limit (corruption).
    #[error("chunk {index}: length {len} is beyond the limit (corrupted length field)")]
    ChunkTooLong {
        /// Chunk position, from 0.
        index: u32,
        /// The length read.
        len: u32,
    },
    /// The file ends inside a chunk.
    #[error("chunk {index}: the file ends inside it (truncated)")]
    TruncatedChunk {
        /// Chunk position.
        index: u32,
    },
    /// A chunk that does not authenticate at its position.
    #[error(
        "chunk {index}: authentication failed (a modified byte, or a chunk from another file)"
    )]
    Tampered {
        /// Chunk position.
        index: u32,
    },
    /// A chunk that authenticates, but as another position: chunks were swapped or moved.
    #[error("chunk {index}: it is chunk {written} of this file moved here (chunks reordered)")]
    Reordered {
        /// Position in the file.
        index: u32,
        /// Position it was written at.
        written: u32,
    },
    /// The file ends after a chunk that is not the final one.
    #[error("truncated after chunk {last}: the final chunk is missing (cut off, or the recording was interrupted by a crash)")]
    MissingFinal {
        /// The last chunk present (None: no chunk at all).
        last: i64,
    },
    /// Bytes after the final chunk.
    #[error("data after the final chunk {index} (appended or spliced)")]
    AfterFinal {
        /// The final chunk's position.
        index: u32,
    },
    /// A chunk's plaintext is not a sequence of frames.
    #[error("chunk {index}: malformed frame at byte {offset}")]
    BadFrame {
        /// Chunk position.
        index: u32,
        /// Byte offset in the plaintext.
        offset: usize,
    },
}

/// One media frame: a decrypted RTP payload of one track, with its timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Track (0 caller, 1 callee).
    pub track: u8,
    /// RTP marker bit.
    pub marker: bool,
    /// RTP sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub rtp_ts: u32,
    /// Arrival, milliseconds since the header's `start_unix_ms`.
    pub time_ms: u32,
    /// Audio in the header's codec.
    pub payload: Vec<u8>,
}

/// Appends a frame's encoding to `out` (payload at most 65535 bytes; longer is cut).
pub fn encode_frame(
    out: &mut Vec<u8>,
    track: u8,
    marker: bool,
    seq: u16,
    rtp_ts: u32,
    time_ms: u32,
    payload: &[u8],
) {
    let payload = &payload[..payload.len().min(u16::MAX as usize)];
    out.push(track);
    out.push(u8::from(marker));
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&rtp_ts.to_be_bytes());
    out.extend_from_slice(&time_ms.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
}

/// Splits a chunk's plaintext into frames.
pub fn decode_frames(index: u32, plain: &[u8]) -> Result<Vec<Frame>, FormatError> {
    let mut out = Vec::new();
    let mut off = 0;
    while off < plain.len() {
        let bad = FormatError::BadFrame { index, offset: off };
        let h = plain.get(off..off + FRAME_HEADER_LEN).ok_or(bad.clone())?;
        let len = usize::from(u16::from_be_bytes([h[12], h[13]]));
        let payload = plain
            .get(off + FRAME_HEADER_LEN..off + FRAME_HEADER_LEN + len)
            .ok_or(bad)?;
        out.push(Frame {
            track: h[0],
            marker: h[1] & 1 != 0,
            seq: u16::from_be_bytes([h[2], h[3]]),
            rtp_ts: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
            time_ms: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
            payload: payload.to_vec(),
        });
        off += FRAME_HEADER_LEN + len;
    }
    Ok(out)
}

/// The chunk nonce: prefix || counter || final flag.
pub fn chunk_nonce(prefix: &[u8; NONCE_PREFIX_LEN], index: u32, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..7].copy_from_slice(prefix);
    n[7..11].copy_from_slice(&index.to_be_bytes());
    n[11] = u8::from(last);
    n
}

/// The bytes a file starts with up to the end of its header (the AAD of every chunk).
pub fn encode_prefix(header: &Header) -> Result<Vec<u8>, FormatError> {
    let h = serde_json::to_vec(header).map_err(|e| FormatError::BadHeader(e.to_string()))?;
    if h.len() > MAX_HEADER {
        return Err(FormatError::BadHeader("header too long".into()));
    }
    let mut out = Vec::with_capacity(PREFIX_LEN + h.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&(h.len() as u32).to_be_bytes());
    out.extend_from_slice(&h);
    Ok(out)
}

/// Seals chunks of one recording, in order.
pub struct Sealer {
    key: LessSafeKey,
    aad: Vec<u8>,
    prefix: [u8; NONCE_PREFIX_LEN],
    next: u32,
    done: bool,
}

impl Sealer {
    /// A sealer for the file whose prefix (magic..header) is `aad`.
    pub fn new(key: &[u8; KEY_LEN], aad: Vec<u8>, prefix: [u8; NONCE_PREFIX_LEN]) -> Sealer {
        // A 32-byte key is always a valid AES-256 key.
        let unbound = UnboundKey::new(&AES_256_GCM, key).unwrap_or_else(|_| unreachable!());
        Sealer {
            key: LessSafeKey::new(unbound),
            aad,
            prefix,
            next: 0,
            done: false,
        }
    }

    /// Chunks sealed so far.
    pub fn chunks(&self) -> u32 {
        self.next
    }

    /// Seals `plain` as the next chunk (`last`: the final one); returns `len || ciphertext`.
    /// None after the final chunk, or when the counter is exhausted.
    pub fn seal(&mut self, plain: &[u8], last: bool) -> Option<Vec<u8>> {
        if self.done || plain.len() > MAX_CHUNK_PLAIN {
            return None;
        }
        let index = self.next;
        let last = last || index == u32::MAX;
        let mut out = Vec::with_capacity(4 + plain.len() + TAG_LEN);
        out.extend_from_slice(&((plain.len() + TAG_LEN) as u32).to_be_bytes());
        out.extend_from_slice(plain);
        let mut body = out.split_off(4);
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(chunk_nonce(&self.prefix, index, last)),
                Aad::from(&self.aad),
                &mut body,
            )
            .ok()?;
        out.extend_from_slice(&body);
        self.next = index.wrapping_add(1);
        self.done = last;
        Some(out)
    }
}

/// The parsed beginning of a recording file.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The header.
    pub header: Header,
    /// Bytes `[0, PREFIX_LEN + header_len)`: the AAD.
    pub aad: Vec<u8>,
    /// The key block, None when shredded.
    pub keyblock: Option<KeyBlock>,
    /// Offset of the key block's length field.
    pub keyblock_offset: usize,
    /// Length of the key block.
    pub keyblock_len: usize,
    /// Offset of the first chunk.
    pub chunks_offset: usize,
}

impl Opened {
    /// The nonce prefix from the header.
    pub fn nonce_prefix(&self) -> Result<[u8; NONCE_PREFIX_LEN], FormatError> {
        let mut p = [0u8; NONCE_PREFIX_LEN];
        hex::decode_to_slice(&self.header.nonce_prefix, &mut p)
            .map_err(|_| FormatError::BadHeader("nonce_prefix is not 7 hex bytes".into()))?;
        Ok(p)
    }
}

/// Parses the prefix, header and key block from the start of a file (`b` holds at least that).
pub fn open(b: &[u8]) -> Result<Opened, FormatError> {
    if b.len() < PREFIX_LEN {
        return Err(if b.starts_with(&MAGIC[..b.len().min(8)]) {
            FormatError::ShortHeader
        } else {
            FormatError::BadMagic
        });
    }
    if &b[..8] != MAGIC {
        return Err(FormatError::BadMagic);
    }
    let version = u16::from_be_bytes([b[8], b[9]]);
    if version != VERSION {
        return Err(FormatError::Version(version));
    }
    let hlen = u32::from_be_bytes([b[10], b[11], b[12], b[13]]) as usize;
    if hlen > MAX_HEADER {
        return Err(FormatError::BadHeader(format!(
            "length {hlen} beyond the limit"
        )));
    }
    let hend = PREFIX_LEN + hlen;
    let hbytes = b.get(PREFIX_LEN..hend).ok_or(FormatError::ShortHeader)?;
    let header: Header =
        serde_json::from_slice(hbytes).map_err(|e| FormatError::BadHeader(e.to_string()))?;
    if header.format != "srtp-edge recording" || header.version != VERSION {
        return Err(FormatError::BadHeader("format/version fields".into()));
    }
    let kl = b.get(hend..hend + 2).ok_or(FormatError::ShortHeader)?;
    let klen = usize::from(u16::from_be_bytes([kl[0], kl[1]]));
    if klen > MAX_KEYBLOCK {
        return Err(FormatError::BadKeyBlock(format!(
            "length {klen} beyond the limit"
        )));
    }
    let kb = b
        .get(hend + 2..hend + 2 + klen)
        .ok_or(FormatError::ShortHeader)?;
    let keyblock = if kb.iter().all(|&x| x == 0) {
        None
    } else {
        let text = std::str::from_utf8(kb)
            .map_err(|_| FormatError::BadKeyBlock("not UTF-8".into()))?
            .trim_end_matches(' ');
        Some(serde_json::from_str(text).map_err(|e| FormatError::BadKeyBlock(e.to_string()))?)
    };
    Ok(Opened {
        header,
        aad: b[..hend].to_vec(),
        keyblock,
        keyblock_offset: hend,
        keyblock_len: klen,
        chunks_offset: hend + 2 + klen,
    })
}

/// Opens the chunks that follow the key block, checking order, completeness and integrity.
/// Returns each chunk's frames; the first problem ends the walk with its error, together with
/// the frames authenticated before it.
pub fn open_chunks(
    o: &Opened,
    key: &[u8; KEY_LEN],
    body: &[u8],
) -> (Vec<Vec<Frame>>, Result<(), FormatError>) {
    let mut out = Vec::new();
    let r = walk(o, key, body, &mut out);
    (out, r)
}

fn walk(
    o: &Opened,
    key: &[u8; KEY_LEN],
    body: &[u8],
    out: &mut Vec<Vec<Frame>>,
) -> Result<(), FormatError> {
    let prefix = o.nonce_prefix()?;
    let k =
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).map_err(|_| FormatError::Shredded)?);
    let open_as = |ct: &[u8], index: u32, last: bool| -> Option<Vec<u8>> {
        let mut buf = ct.to_vec();
        let n = Nonce::assume_unique_for_key(chunk_nonce(&prefix, index, last));
        let plain = k.open_in_place(n, Aad::from(&o.aad), &mut buf).ok()?;
        Some(plain.to_vec())
    };
    let mut off = 0usize;
    let mut index: u32 = 0;
    loop {
        if off == body.len() {
            return Err(FormatError::MissingFinal {
                last: i64::from(index) - 1,
            });
        }
        let lb = body
            .get(off..off + 4)
            .ok_or(FormatError::TruncatedChunk { index })?;
        let len = u32::from_be_bytes([lb[0], lb[1], lb[2], lb[3]]);
        if len as usize > MAX_CHUNK_PLAIN + TAG_LEN || (len as usize) < TAG_LEN {
            return Err(FormatError::ChunkTooLong { index, len });
        }
        let ct = body
            .get(off + 4..off + 4 + len as usize)
            .ok_or(FormatError::TruncatedChunk { index })?;
        off += 4 + len as usize;
        let (plain, last) = match open_as(ct, index, false) {
            Some(p) => (p, false),
            None => match open_as(ct, index, true) {
                Some(p) => (p, true),
                None => {
                    // Diagnose: is it another position of this file?
                    let lo = index.saturating_sub(256);
                    let hi = index.saturating_add(256);
                    for j in lo..=hi {
                        if j != index
                            && (open_as(ct, j, false).is_some() || open_as(ct, j, true).is_some())
                        {
                            return Err(FormatError::Reordered { index, written: j });
                        }
                    }
                    return Err(FormatError::Tampered { index });
                }
            },
        };
        out.push(decode_frames(index, &plain)?);
        if last {
            if off != body.len() {
                return Err(FormatError::AfterFinal { index });
            }
            return Ok(());
        }
        index = index
            .checked_add(1)
            .ok_or(FormatError::Tampered { index })?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            format: "srtp-edge recording".into(),
            version: 1,
            id: "00112233445566778899aabbccddeeff".into(),
            class: "recordings".into(),
            tenant: "default".into(),
            codec: "PCMU".into(),
            sample_rate: 8000,
            tracks: vec![],
            start_unix_ms: 1,
            chunk_ms: 250,
            nonce_prefix: "01020304050607".into(),
            call: CallMeta::default(),
        }
    }

    fn file(chunks: usize) -> (Vec<u8>, [u8; 32]) {
        let key = [5u8; 32];
        let mut f = encode_prefix(&header()).unwrap();
        let mut s = Sealer::new(&key, f.clone(), [1, 2, 3, 4, 5, 6, 7]);
        let kb = KeyBlock {
            kek: "file:recordings/default/v1".into(),
            wrapped_key: "AAAA".into(),
        }
        .encode()
        .unwrap();
        f.extend_from_slice(&(kb.len() as u16).to_be_bytes());
        f.extend_from_slice(&kb);
        for i in 0..chunks {
            let mut p = Vec::new();
            encode_frame(
                &mut p,
                (i % 2) as u8,
                false,
                i as u16,
                160 * i as u32,
                20 * i as u32,
                &[i as u8; 160],
            );
            f.extend(s.seal(&p, i + 1 == chunks).unwrap());
        }
        (f, key)
    }

    fn check(f: &[u8], key: &[u8; 32]) -> Result<usize, FormatError> {
        let o = open(f)?;
        let (frames, r) = open_chunks(&o, key, &f[o.chunks_offset..]);
        r.map(|_| frames.len())
    }

    #[test]
    fn round_trip() {
        let (f, key) = file(4);
        assert_eq!(check(&f, &key), Ok(4));
        let o = open(&f).unwrap();
        let (frames, _) = open_chunks(&o, &key, &f[o.chunks_offset..]);
        assert_eq!(frames[2][0].payload, vec![2u8; 160]);
        assert_eq!(frames[3][0].rtp_ts, 480);
    }

    #[test]
    fn every_flipped_bit_of_a_chunk_or_header_is_detected() {
        let (f, key) = file(3);
        let o = open(&f).unwrap();
        for i in (0..o.keyblock_offset).chain(o.chunks_offset..f.len()) {
            let mut g = f.clone();
            g[i] ^= 0x10;
            assert!(check(&g, &key).is_err(), "flip at byte {i} undetected");
        }
    }

    #[test]
    fn truncation_reordering_and_splicing_are_named() {
        let (f, key) = file(3);
        let o = open(&f).unwrap();
        let c = o.chunks_offset;
        let len = |at: usize| 4 + u32::from_be_bytes(f[at..at + 4].try_into().unwrap()) as usize;
        let (l0, l1) = (len(c), len(c + len(c)));
        // Cut off the final chunk.
        assert_eq!(
            check(&f[..c + l0 + l1], &key),
            Err(FormatError::MissingFinal { last: 1 })
        );
        // Cut inside a chunk.
        assert_eq!(
            check(&f[..c + l0 + 10], &key),
            Err(FormatError::TruncatedChunk { index: 1 })
        );
        // Swap chunks 0 and 1.
        let mut g = f[..c].to_vec();
        g.extend_from_slice(&f[c + l0..c + l0 + l1]);
        g.extend_from_slice(&f[c..c + l0]);
        g.extend_from_slice(&f[c + l0 + l1..]);
        assert_eq!(
            check(&g, &key),
            Err(FormatError::Reordered {
                index: 0,
                written: 1
            })
        );
        // Data after the final chunk.
        let mut h = f.clone();
        h.extend_from_slice(&f[c..c + l0]);
        assert_eq!(check(&h, &key), Err(FormatError::AfterFinal { index: 2 }));
        // A chunk from another recording (other nonce prefix) does not authenticate.
        let mut hd = header();
        hd.nonce_prefix = "0a0b0c0d0e0f00".into();
        let aad = encode_prefix(&hd).unwrap();
        let mut s = Sealer::new(&key, aad, [10, 11, 12, 13, 14, 15, 0]);
        let foreign = s.seal(&[], false).unwrap();
        let mut k = f[..c].to_vec();
        k.extend_from_slice(&foreign);
        k.extend_from_slice(&f[c + l0..]);
        assert_eq!(check(&k, &key), Err(FormatError::Tampered { index: 0 }));
    }

    #[test]
    fn shredded_and_junk_files_are_named() {
        let (mut f, _) = file(1);
        let o = open(&f).unwrap();
        for b in &mut f[o.keyblock_offset + 2..o.chunks_offset] {
            *b = 0;
        }
        assert!(open(&f).unwrap().keyblock.is_none());
        assert_eq!(open(b"RIFF....WAVE").unwrap_err(), FormatError::BadMagic);
        assert_eq!(
            open(b"SRTPEREC\x00\x02\x00\x00\x00\x00").unwrap_err(),
            FormatError::Version(2)
        );
        assert_eq!(open(&f[..20]).unwrap_err(), FormatError::ShortHeader);
    }
}
