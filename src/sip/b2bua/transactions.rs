//! Our client transactions (requests the B2BUA sent and whose responses it waits for), found by
//! the branch of a response's top Via and its CSeq method (RFC 3261 17.1.3), and indexed per
//! call: each call lists its own branches, so ending a call removes only its transactions
//! (O(its transactions), not a pass over every transaction of every call at mass teardown).

use std::collections::HashMap;

use crate::side::Side;
use crate::sip::message::Request;
use crate::sip::method::Method;

use super::timers::TimerId;
use super::{B2bua, MediaPlane, Peer};

/// What a client transaction is for.
#[derive(Debug)]
pub(super) enum Tx {
    /// The initial INVITE on leg B.
    Invite,
    /// A request relayed from the other leg; its final response goes back to the sender.
    Relay(Box<Relay>),
}

/// A request relayed from one leg to the other.
#[derive(Debug)]
pub(super) struct Relay {
    /// The sender's connection.
    pub(super) from: Peer,
    /// The sender's request (its response is built from it).
    pub(super) req: Request,
    /// The offerer's tag when the relayed request carried an SDP offer.
    pub(super) offer_tag: Option<String>,
    /// The leg it was relayed to (which answers it).
    pub(super) to: Side,
    /// Timer F, for relayed requests that start no offer/answer exchange (those have the
    /// exchange's own deadline).
    pub(super) timer: Option<TimerId>,
}

/// One client transaction.
#[derive(Debug)]
pub(super) struct ClientTx {
    /// The call it belongs to.
    pub(super) call: String,
    /// The request's method: a response whose CSeq names another method (the 200 to a CANCEL
    /// sharing the INVITE's branch) is not this transaction's.
    pub(super) method: Method,
    pub(super) kind: Tx,
}

/// Client transactions by branch.
#[derive(Debug, Default)]
pub(super) struct Transactions {
    by_branch: HashMap<String, ClientTx>,
}

impl Transactions {
    /// The transaction of `branch`.
    pub(super) fn get(&self, branch: &str) -> Option<&ClientTx> {
        self.by_branch.get(branch)
    }

    /// How many are in progress.
    pub(super) fn len(&self) -> usize {
        self.by_branch.len()
    }
}

impl<M: MediaPlane> B2bua<M> {
    /// Starts a client transaction of call `key` on `branch`.
    pub(super) fn add_tx(&mut self, key: &str, branch: String, method: Method, kind: Tx) {
        if let Some(c) = self.calls.get_mut(key) {
            c.txs.push(branch.clone());
        }
        self.txs.by_branch.insert(
            branch,
            ClientTx {
                call: key.to_string(),
                method,
                kind,
            },
        );
    }

    /// Ends the transaction of `branch` (final response, timeout): removed from its call's
    /// list, its timer cancelled.
    pub(super) fn finish_tx(&mut self, branch: &str) -> Option<ClientTx> {
        let tx = self.txs.by_branch.remove(branch)?;
        if let Some(c) = self.calls.get_mut(&tx.call) {
            c.txs.retain(|b| b != branch);
        }
        if let Tx::Relay(r) = &tx.kind {
            if let Some(t) = r.timer {
                self.timers.cancel(t);
            }
        }
        Some(tx)
    }

    /// Drops every transaction in `branches` (a call that ended).
    pub(super) fn drop_txs(&mut self, branches: Vec<String>) {
        for b in branches {
            if let Some(ClientTx {
                kind: Tx::Relay(r), ..
            }) = self.txs.by_branch.remove(&b)
            {
                if let Some(t) = r.timer {
                    self.timers.cancel(t);
                }
            }
        }
    }
}
