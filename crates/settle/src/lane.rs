//! A settlement lane: one signing key's account-nonce sequence on one network.
//!
//! A lane keeps several settlement transactions in flight at consecutive account nonces, so
//! the settler fills every block it can instead of waiting for one receipt at a time. Every
//! transaction signed at a nonce (the first one and each fee-bumped replacement) is an
//! *attempt* of that nonce; at most one attempt of a nonce can ever be mined, and the chain's
//! account nonce says when one was.
//!
//! This module holds the lane's bookkeeping and decides, from what the chain says each round
//! (the account's mined nonce and the head block), what each open nonce needs next
//! ([`Lane::plan`]); the settler carries the steps out and journals every signed attempt
//! before it is sent.

use crate::chain::{ChainClient, Fees};
use alloy_primitives::{Address, Bytes, B256};
use std::collections::BTreeMap;

/// Rounds a nonce may stay "used on-chain, but no receipt of ours found" before its payments
/// are reconciled one by one (a node behind another one answers receipts late).
const MISSING_RECEIPT_ROUNDS: u32 = 20;

/// One signed transaction at a nonce.
#[derive(Debug, Clone)]
pub(crate) struct Attempt {
    pub hash: B256,
    pub raw: Vec<u8>,
    pub fees: Fees,
}

/// A nonce the lane has signed at and not yet seen mined.
#[derive(Debug, Clone)]
pub(crate) struct OpenNonce {
    pub to: Address,
    pub data: Bytes,
    pub gas_limit: u64,
    /// Oldest first; the newest is what the node should hold.
    pub attempts: Vec<Attempt>,
    /// The head block when the newest attempt was sent: the fee-bump clock.
    pub sent_at_block: u64,
    /// The head block at which the node was last asked whether it holds the newest attempt.
    pub checked_at_block: u64,
    /// Rounds since the chain's nonce passed this one without a receipt of ours.
    pub missing_receipt_rounds: u32,
}

impl OpenNonce {
    pub fn newest(&self) -> Option<&Attempt> {
        self.attempts.last()
    }

    pub fn hashes(&self) -> impl Iterator<Item = B256> + '_ {
        self.attempts.iter().map(|attempt| attempt.hash)
    }
}

/// What an open nonce needs this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// The chain's nonce has passed it: one attempt (or someone else's transaction) was
    /// mined; find which and write the payments' outcome.
    Resolve(u64),
    /// Not mined after a block: make sure the node still holds the newest attempt.
    CheckHeld(u64),
    /// Not mined after `bump_after_blocks`: replace it at the same nonce, with higher fees.
    Bump(u64),
    /// The chain waits on a nonce the lane holds nothing for, below its open ones: fill it
    /// with a no-op transaction or nothing above it can ever be mined.
    FillGap(u64),
}

/// One signing key's nonce sequence on one network.
pub(crate) struct Lane {
    pub client: ChainClient,
    /// The nonce the next new transaction takes; `None` until read from the chain.
    pub next_nonce: Option<u64>,
    pub open: BTreeMap<u64, OpenNonce>,
}

impl Lane {
    pub fn new(client: ChainClient) -> Self {
        Self { client, next_nonce: None, open: BTreeMap::new() }
    }

    pub fn signer(&self) -> Address {
        self.client.settler_address()
    }

    /// Takes in a journaled attempt found at start (a crash left it open).
    pub fn recover(&mut self, nonce: u64, to: Address, data: Bytes, gas_limit: u64, attempt: Attempt) {
        let open = self.open.entry(nonce).or_insert_with(|| OpenNonce {
            to,
            data,
            gas_limit,
            attempts: Vec::new(),
            sent_at_block: 0,
            checked_at_block: 0,
            missing_receipt_rounds: 0,
        });
        open.attempts.push(attempt);
        self.next_nonce = Some(self.next_nonce.map_or(nonce + 1, |next| next.max(nonce + 1)));
    }

    /// What each open nonce needs, given the account's mined nonce (`mined_nonce`: the next
    /// nonce the chain will mine), whether the node's pool holds a transaction at it
    /// (`pool_holds_next`), and the head block.
    pub fn plan(&self, mined_nonce: u64, pool_holds_next: bool, head: u64, bump_after_blocks: u64) -> Vec<Step> {
        let mut steps = Vec::new();
        if let Some((&lowest, open)) = self.open.first_key_value() {
            // Nothing of ours is at the nonce the chain waits on. Fill it when the node holds
            // nothing there, or when what it holds has not been mined for as long as one of
            // ours would wait before a bump (some nodes count queued transactions as pending).
            let stuck = head >= open.sent_at_block.saturating_add(bump_after_blocks.max(1));
            if lowest > mined_nonce && (!pool_holds_next || stuck) {
                steps.push(Step::FillGap(mined_nonce));
            }
        }
        for (&nonce, open) in &self.open {
            if nonce < mined_nonce {
                steps.push(Step::Resolve(nonce));
            } else if head >= open.sent_at_block.saturating_add(bump_after_blocks.max(1)) {
                steps.push(Step::Bump(nonce));
            } else if head > open.sent_at_block && head > open.checked_at_block {
                steps.push(Step::CheckHeld(nonce));
            }
        }
        steps
    }

    /// Counts a round in which `nonce` was used on-chain but no attempt's receipt was
    /// found; says whether to give up waiting for one.
    pub fn receipt_missing(&mut self, nonce: u64) -> bool {
        let Some(open) = self.open.get_mut(&nonce) else { return true };
        open.missing_receipt_rounds += 1;
        open.missing_receipt_rounds >= MISSING_RECEIPT_ROUNDS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::signers::local::PrivateKeySigner;

    fn lane_with(nonces: &[(u64, u64)]) -> Lane {
        let client = ChainClient::new(&["http://127.0.0.1:1".into()], PrivateKeySigner::random(), 1, None).unwrap();
        let mut lane = Lane::new(client);
        for &(nonce, sent_at_block) in nonces {
            let fees = Fees { max_fee_per_gas: 10, max_priority_fee_per_gas: 1 };
            lane.recover(nonce, Address::ZERO, Bytes::new(), 21_000, Attempt { hash: B256::with_last_byte(nonce as u8), raw: vec![], fees });
            lane.open.get_mut(&nonce).unwrap().sent_at_block = sent_at_block;
        }
        lane
    }

    #[test]
    fn mined_nonces_resolve_slow_ones_bump_and_recent_ones_are_checked() {
        let lane = lane_with(&[(5, 100), (6, 100), (7, 103), (8, 104)]);
        assert_eq!(lane.next_nonce, Some(9));
        // Head 104, chain mined up to 5 (next is 6): 5 resolves, 6 waited 4 blocks (bump
        // after 3), 7 waited one block (check the node holds it), 8 was sent this block.
        assert_eq!(lane.plan(6, true, 104, 3), vec![Step::Resolve(5), Step::Bump(6), Step::CheckHeld(7)]);
    }

    #[test]
    fn a_nonce_below_the_open_ones_that_nobody_holds_is_filled() {
        let lane = lane_with(&[(7, 100), (8, 100)]);
        assert_eq!(lane.plan(5, false, 100, 3), vec![Step::FillGap(5)]);
        // The pool holds a transaction at 5 (someone's, or ours the journal lost): wait,
        // unless ours have waited as long as a bump takes.
        assert!(lane.plan(5, true, 102, 3).iter().all(|step| !matches!(step, Step::FillGap(_))));
        assert!(lane.plan(5, true, 103, 3).contains(&Step::FillGap(5)));
    }

    #[test]
    fn a_missing_receipt_is_waited_for_a_bounded_number_of_rounds() {
        let mut lane = lane_with(&[(3, 1)]);
        let gave_up = (0..MISSING_RECEIPT_ROUNDS).map(|_| lane.receipt_missing(3)).collect::<Vec<_>>();
        assert!(gave_up[..gave_up.len() - 1].iter().all(|g| !g));
        assert!(gave_up[gave_up.len() - 1]);
    }
}
