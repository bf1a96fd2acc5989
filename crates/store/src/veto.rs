//! Operator vetoes: a node operator's refusal of a key name on their node, kept apart from the
//! admin's per-key `enabled` flag so that nothing that changes the flag can clear it.
//!
//! One tree, `vetoes`, for both key families (a veto refuses "the key named X" on this node,
//! EC and threshold RSA alike, like the admin flag does):
//!
//! ```text
//! vetoes: key_id → 0x01 ‖ u64be(time_ms) ‖ reason (UTF-8, at most MAX_VETO_REASON bytes)
//! ```
//!
//! A veto outlives its key's records: it is removed only by a lift, so a name vetoed here stays
//! refused here even if its key is removed and created again.

use crate::error::{Error, Result};

/// Longest veto reason, in bytes.
pub const MAX_VETO_REASON: usize = 256;

const RECORD_FORMAT: u8 = 0x01;

/// One operator veto.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Veto {
    /// When the operator vetoed the key, Unix milliseconds (from the caller's clock).
    pub time_ms: u64,
    /// The operator's reason (may be empty).
    pub reason: String,
}

/// Checks a reason: at most [`MAX_VETO_REASON`] bytes, no control characters.
pub(crate) fn check_reason(reason: &str) -> Result<()> {
    if reason.len() > MAX_VETO_REASON || reason.chars().any(char::is_control) {
        return Err(Error::Invalid("veto reason"));
    }
    Ok(())
}

pub(crate) fn encode(v: &Veto) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + v.reason.len());
    out.push(RECORD_FORMAT);
    out.extend_from_slice(&v.time_ms.to_be_bytes());
    out.extend_from_slice(v.reason.as_bytes());
    out
}

pub(crate) fn decode(name: &str, v: &[u8]) -> Result<Veto> {
    let corrupt = || Error::Corrupt(format!("veto {name}"));
    let (header, reason) = v.split_at_checked(9).ok_or_else(corrupt)?;
    if header[0] != RECORD_FORMAT || reason.len() > MAX_VETO_REASON {
        return Err(corrupt());
    }
    let time_ms = u64::from_be_bytes(header[1..9].try_into().map_err(|_| corrupt())?);
    let reason = std::str::from_utf8(reason).map_err(|_| corrupt())?.to_owned();
    Ok(Veto { time_ms, reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veto_records_round_trip_and_bad_ones_are_corrupt() {
        let v = Veto { time_ms: 42, reason: "subpoena — hold".into() };
        assert_eq!(decode("k", &encode(&v)).unwrap(), v);
        let empty = Veto { time_ms: 0, reason: String::new() };
        assert_eq!(decode("k", &encode(&empty)).unwrap(), empty);
        let bytes = encode(&v);
        for cut in 0..9 {
            assert!(matches!(decode("k", &bytes[..cut]), Err(Error::Corrupt(_))), "cut {cut}");
        }
        let mut bad = bytes.clone();
        bad[0] = 2;
        assert!(decode("k", &bad).is_err(), "unknown format");
        let mut bad = bytes;
        bad.push(0xff);
        assert!(decode("k", &bad).is_err(), "not UTF-8");
    }

    #[test]
    fn reasons_are_bounded_and_printable() {
        assert!(check_reason("").is_ok() && check_reason(&"x".repeat(MAX_VETO_REASON)).is_ok());
        assert!(check_reason(&"x".repeat(MAX_VETO_REASON + 1)).is_err());
        assert!(check_reason("a\nb").is_err() && check_reason("a\u{7}").is_err());
    }
}
