//! The in-memory datagram pipe between OpenSSL and a DTLS endpoint: OpenSSL reads one whole
//! received datagram per `read` (DTLS needs datagram boundaries, which a byte-stream memory BIO
//! would lose) and writes one datagram per `write` (it packs a flight's records up to the MTU
//! before writing). Bounded, so a stuck peer cannot make us buffer without limit.

use std::collections::VecDeque;
use std::io::{self, Read, Write};

/// Datagrams queued for sending; the oldest is dropped beyond this (they are retransmitted).
pub(super) const MAX_QUEUED_TX: usize = 32;

/// One received datagram waiting for OpenSSL, and the datagrams OpenSSL wrote.
#[derive(Default)]
pub(super) struct DatagramPipe {
    /// The datagram OpenSSL reads next (at most one: the endpoint feeds them one by one).
    pub(super) rx: Option<Vec<u8>>,
    /// Datagrams to send, oldest first.
    pub(super) tx: VecDeque<Vec<u8>>,
}

impl Read for DatagramPipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.rx.take() {
            Some(d) => {
                // OpenSSL reads into a buffer of a full record (16 KiB+), larger than any
                // datagram we pass; a shorter read would only truncate a record it then drops.
                let n = d.len().min(buf.len());
                buf[..n].copy_from_slice(&d[..n]);
                Ok(n)
            }
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for DatagramPipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.tx.len() >= MAX_QUEUED_TX {
            self.tx.pop_front();
        }
        self.tx.push_back(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
