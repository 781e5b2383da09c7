//! Entry bundles, the `tile/entries/...` resources of C2SP tlog-tiles (PROTOCOL.md §4):
//! the entries of one tile, in order, each prefixed by its big-endian `u16` length. The log
//! writes them with [`push`]; readers split them with [`parse`], which takes nothing but
//! exactly the entries a tile of that width must hold.

use crate::entry::MAX_ENTRY_BYTES;

/// Why bytes are not the bundle expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// An entry is longer than a length prefix can say.
    #[error("entry of {0} bytes is longer than {MAX_ENTRY_BYTES}")]
    TooLong(usize),
    /// The data ends inside a length prefix or an entry.
    #[error("entry {0} is truncated")]
    Truncated(usize),
    /// The bundle holds another number of entries.
    #[error("{found} entries, expected {expected}")]
    Count {
        /// Entries found.
        found: usize,
        /// Entries the tile's width calls for.
        expected: usize,
    },
}

/// Appends `entry` to the bundle `out`.
pub fn push(out: &mut Vec<u8>, entry: &[u8]) -> Result<(), BundleError> {
    let len = u16::try_from(entry.len()).map_err(|_| BundleError::TooLong(entry.len()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(entry);
    Ok(())
}

/// Splits a bundle that must hold exactly `count` entries and nothing after them.
pub fn parse(data: &[u8], count: usize) -> Result<Vec<&[u8]>, BundleError> {
    let mut entries = Vec::with_capacity(count.min(data.len() / 2));
    let mut rest = data;
    while !rest.is_empty() {
        let (entry, tail) = split_first(rest, entries.len())?;
        entries.push(entry);
        rest = tail;
    }
    if entries.len() != count {
        return Err(BundleError::Count {
            found: entries.len(),
            expected: count,
        });
    }
    Ok(entries)
}

/// The byte length of the first `count` entries of a bundle that may hold more (a full
/// bundle read in place of a partial one).
pub fn prefix_len(data: &[u8], count: usize) -> Result<usize, BundleError> {
    let mut rest = data;
    for i in 0..count {
        if rest.is_empty() {
            return Err(BundleError::Count {
                found: i,
                expected: count,
            });
        }
        rest = split_first(rest, i)?.1;
    }
    Ok(data.len() - rest.len())
}

/// The first entry of `data` (entry number `i` of its bundle) and what follows it.
fn split_first(data: &[u8], i: usize) -> Result<(&[u8], &[u8]), BundleError> {
    let (len, tail) = match data {
        [a, b, tail @ ..] => (usize::from(u16::from_be_bytes([*a, *b])), tail),
        _ => return Err(BundleError::Truncated(i)),
    };
    match tail.split_at_checked(len) {
        Some(split) => Ok(split),
        None => Err(BundleError::Truncated(i)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_round_trip_and_are_parsed_strictly() {
        let mut bundle = Vec::new();
        push(&mut bundle, b"abc").expect("push");
        push(&mut bundle, b"").expect("push");
        push(&mut bundle, b"de").expect("push");
        assert_eq!(bundle, b"\0\x03abc\0\0\0\x02de");
        let parsed = parse(&bundle, 3).expect("parse");
        assert_eq!(parsed, [b"abc".as_slice(), b"", b"de"]);
        assert_eq!(
            parse(&bundle, 2),
            Err(BundleError::Count {
                found: 3,
                expected: 2
            })
        );
        assert_eq!(parse(&bundle[..4], 1), Err(BundleError::Truncated(0)));
        assert_eq!(parse(&bundle[..6], 2), Err(BundleError::Truncated(1)));
        assert_eq!(prefix_len(&bundle, 0), Ok(0));
        assert_eq!(prefix_len(&bundle, 2), Ok(7));
        assert_eq!(prefix_len(&bundle, 3), Ok(bundle.len()));
        assert!(prefix_len(&bundle, 4).is_err());
        assert!(prefix_len(&bundle[..8], 3).is_err());
        let long = vec![0; MAX_ENTRY_BYTES + 1];
        assert_eq!(
            push(&mut bundle, &long),
            Err(BundleError::TooLong(long.len()))
        );
    }
}
