//! The journal's copy of payment-channel records: written on every charge and every mirror
//! refresh, read once at start to rebuild the in-process channel store.

use super::{Journal, JournalError};
use crate::channels::{ChannelRecord, ChannelTerms, OnchainChannel};
use rusqlite::{params, Connection, Row};

/// A row replaces the channel's only while its charged total does not go down (amounts are
/// compared as numbers: `?11` is decimal text); a stale writer changes nothing.
const UPSERT_CHANNEL: &str = "INSERT INTO channels (id, network, chain_id, payer, payer_authorizer, receiver,
    receiver_authorizer, token, withdraw_delay, salt, charged, signed_max, signature, balance, total_claimed,
    withdraw_requested_at, refund_nonce, synced_at_ms, last_charged_at_ms)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)
    ON CONFLICT (id) DO UPDATE SET charged = excluded.charged, signed_max = excluded.signed_max, signature = excluded.signature,
        balance = excluded.balance, total_claimed = excluded.total_claimed, withdraw_requested_at = excluded.withdraw_requested_at,
        refund_nonce = excluded.refund_nonce, synced_at_ms = excluded.synced_at_ms, last_charged_at_ms = excluded.last_charged_at_ms
    WHERE length(excluded.charged) > length(channels.charged)
        OR (length(excluded.charged) = length(channels.charged) AND excluded.charged >= channels.charged)";
const CHANNEL_COLUMNS: &str = "id, network, chain_id, payer, payer_authorizer, receiver, receiver_authorizer, token,
    withdraw_delay, salt, charged, signed_max, signature, balance, total_claimed, withdraw_requested_at, refund_nonce,
    synced_at_ms, last_charged_at_ms";

impl Journal {
    /// Writes `records` (each replacing its channel's row) in the writer's next commit;
    /// resolves once they are on disk. A charge is answered only after this.
    pub async fn save_channels(&self, records: Vec<ChannelRecord>) -> Result<(), JournalError> {
        self.write(move |connection| {
            let mut upsert = connection.prepare_cached(UPSERT_CHANNEL)?;
            for record in &records {
                upsert_channel(&mut upsert, record)?;
            }
            Ok(())
        })
        .await
    }

    /// Every channel record.
    pub fn channels(&self) -> Result<Vec<ChannelRecord>, JournalError> {
        read_channels(&super::lock(&self.reader))
    }
}

impl super::JournalReader {
    /// Every channel record, for the CLI.
    pub fn channels(&self) -> Result<Vec<ChannelRecord>, JournalError> {
        read_channels(&self.connection)
    }
}

fn upsert_channel(upsert: &mut rusqlite::CachedStatement<'_>, record: &ChannelRecord) -> Result<(), JournalError> {
    let terms = &record.terms;
    let onchain = &record.onchain;
    upsert.execute(params![
        &record.id[..],
        record.network,
        record.chain_id,
        &terms.payer[..],
        &terms.payer_authorizer[..],
        &terms.receiver[..],
        &terms.receiver_authorizer[..],
        &terms.token[..],
        terms.withdraw_delay,
        &terms.salt[..],
        record.charged.to_string(),
        record.signed_max.to_string(),
        record.signature,
        onchain.balance.to_string(),
        onchain.total_claimed.to_string(),
        onchain.withdraw_requested_at,
        onchain.refund_nonce,
        onchain.synced_at_ms,
        record.last_charged_at_ms,
    ])?;
    Ok(())
}

fn read_channels(connection: &Connection) -> Result<Vec<ChannelRecord>, JournalError> {
    let mut query = connection.prepare_cached(&format!("SELECT {CHANNEL_COLUMNS} FROM channels"))?;
    let rows = query.query_map([], |row| Ok(channel_from_row(row)))?;
    rows.map(|row| row?).collect()
}

fn channel_from_row(row: &Row<'_>) -> Result<ChannelRecord, JournalError> {
    Ok(ChannelRecord {
        id: bytes_column(row, 0)?,
        network: row.get(1)?,
        chain_id: row.get(2)?,
        terms: ChannelTerms {
            payer: bytes_column(row, 3)?,
            payer_authorizer: bytes_column(row, 4)?,
            receiver: bytes_column(row, 5)?,
            receiver_authorizer: bytes_column(row, 6)?,
            token: bytes_column(row, 7)?,
            withdraw_delay: row.get(8)?,
            salt: bytes_column(row, 9)?,
        },
        charged: amount_column(row, 10)?,
        signed_max: amount_column(row, 11)?,
        signature: row.get(12)?,
        onchain: OnchainChannel {
            balance: amount_column(row, 13)?,
            total_claimed: amount_column(row, 14)?,
            withdraw_requested_at: row.get(15)?,
            refund_nonce: row.get(16)?,
            synced_at_ms: row.get(17)?,
        },
        last_charged_at_ms: row.get(18)?,
    })
}

fn bytes_column<const N: usize>(row: &Row<'_>, index: usize) -> Result<[u8; N], JournalError> {
    let bytes: Vec<u8> = row.get(index)?;
    bytes.try_into().map_err(|bytes: Vec<u8>| corrupt(format!("column {index} holds {} bytes, not {N}", bytes.len())))
}

fn amount_column(row: &Row<'_>, index: usize) -> Result<u128, JournalError> {
    let text: String = row.get(index)?;
    text.parse().map_err(|_| corrupt(format!("column {index} holds {text:?}, not an amount")))
}

fn corrupt(what: String) -> JournalError {
    // Channel rows have no numeric id; 0 marks "a channel row" in the message.
    JournalError::Corrupt { id: 0, what: format!("channel {what}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::JournalOptions;

    fn record(id: u8, charged: u128) -> ChannelRecord {
        ChannelRecord {
            id: [id; 32],
            network: "eip155:84532".into(),
            chain_id: 84532,
            terms: ChannelTerms {
                payer: [1; 20],
                payer_authorizer: [2; 20],
                receiver: [3; 20],
                receiver_authorizer: [4; 20],
                token: [5; 20],
                withdraw_delay: 900,
                salt: [6; 32],
            },
            charged,
            signed_max: charged + 1,
            signature: vec![7; 65],
            onchain: OnchainChannel { balance: u128::MAX, total_claimed: 3, withdraw_requested_at: 4, refund_nonce: 5, synced_at_ms: 6 },
            last_charged_at_ms: 8,
        }
    }

    #[tokio::test]
    async fn channel_records_round_trip_and_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("journal.sqlite");
        let journal = Journal::open(&path, JournalOptions::default()).expect("open");
        journal.save_channels(vec![record(1, 1_000), record(2, 2_000)]).await.expect("save");
        journal.save_channels(vec![record(1, 3_000)]).await.expect("replace");
        journal.save_channels(vec![record(1, 999)]).await.expect("a stale write is no error");
        journal.close();
        let reopened = Journal::open(&path, JournalOptions::default()).expect("reopen");
        let mut channels = reopened.channels().expect("read");
        channels.sort_by_key(|c| c.id);
        assert_eq!(channels, vec![record(1, 3_000), record(2, 2_000)]);
        assert_eq!(Journal::open_read_only(&path).expect("reader").channels().expect("read").len(), 2);
    }
}
