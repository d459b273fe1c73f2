//! Internet checksums (RFC 1071) and their incremental update (RFC 1624), so that a rewritten
//! header costs a few additions instead of a pass over the whole packet.

/// The one's-complement sum of `data` as big-endian 16-bit words (an odd last byte is padded
/// with zero), not yet folded.
pub fn sum(data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    let mut total: u32 = 0;
    for word in &mut chunks {
        total = total.wrapping_add(u32::from(u16::from_be_bytes([word[0], word[1]])));
    }
    if let [last] = chunks.remainder() {
        total = total.wrapping_add(u32::from(*last) << 8);
    }
    total
}

/// Folds a sum into 16 bits, carries added back in.
pub fn fold(mut total: u32) -> u16 {
    while total > 0xffff {
        total = (total & 0xffff) + (total >> 16);
    }
    total as u16
}

/// The checksum of `data`: the complement of its folded sum.
pub fn compute(data: &[u8]) -> u16 {
    !fold(sum(data))
}

/// RFC 1624, eqn. 3: the checksum after the 16-bit-aligned bytes `old` (at an even offset of
/// the covered data) became `new`: `HC' = ~(~HC + ~m + m')`. `old` and `new` have the same
/// even length.
pub fn adjust(checksum: u16, old: &[u8], new: &[u8]) -> u16 {
    debug_assert_eq!(old.len(), new.len());
    let mut total = u32::from(!checksum);
    for (before, after) in old.chunks_exact(2).zip(new.chunks_exact(2)) {
        total += u32::from(!u16::from_be_bytes([before[0], before[1]]));
        total += u32::from(u16::from_be_bytes([after[0], after[1]]));
    }
    !fold(total)
}

/// A partial transport checksum (`CHECKSUM_PARTIAL`: the field holds the folded pseudo-header
/// sum, not complemented; the sending device adds the data and complements) after the
/// pseudo-header bytes `old` became `new`: `P' = P + ~m + m'`. Only the addresses are in the
/// pseudo-header; a port change needs no update.
pub fn adjust_partial(partial: u16, old: &[u8], new: &[u8]) -> u16 {
    debug_assert_eq!(old.len(), new.len());
    let mut total = u32::from(partial);
    for (before, after) in old.chunks_exact(2).zip(new.chunks_exact(2)) {
        total += u32::from(!u16::from_be_bytes([before[0], before[1]]));
        total += u32::from(u16::from_be_bytes([after[0], after[1]]));
    }
    fold(total)
}

/// Finishes a partial transport checksum, as the sending device would: the sum of the bytes
/// from `start` on (the partial value in the field at `start + offset` included) is
/// complemented into that field. False (nothing changed) if the field lies outside `packet`.
pub fn complete_partial(packet: &mut [u8], start: usize, offset: usize) -> bool {
    let at = start.saturating_add(offset);
    if at.saturating_add(2) > packet.len() || start > at {
        return false;
    }
    let partial = u32::from(u16::from_be_bytes([packet[at], packet[at + 1]]));
    packet[at..at + 2].fill(0);
    let mut total = sum(&packet[start..]);
    // `sum` may wrap only past 128 KiB of data; fold it before adding the partial value.
    total = u32::from(fold(total)) + partial;
    let checksum = !fold(total);
    packet[at..at + 2].copy_from_slice(&checksum.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn rfc_1071_example() {
        // The example of RFC 1071 section 3: the sum of these words is ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data)), 0xddf2);
        assert_eq!(compute(&data), !0xddf2);
    }

    proptest! {
        #[test]
        /// Updating incrementally gives the checksum a full recompute gives (up to the two
        /// representations of zero, 0x0000 and 0xffff, which RFC 1624 discusses).
        fn incremental_update_matches_a_full_recompute(
            mut data in proptest::collection::vec(any::<u8>(), 2..200),
            at in any::<prop::sample::Index>(),
            replacement in any::<[u8; 4]>(),
            width in prop::sample::select(vec![2usize, 4]),
        ) {
            if data.len() % 2 == 1 {
                data.push(0);
            }
            prop_assume!(data.len() >= width);
            let start = at.index(data.len() / 2 - width / 2 + 1) * 2;
            prop_assume!(start + width <= data.len());
            let before = compute(&data);
            let old = data[start..start + width].to_vec();
            data[start..start + width].copy_from_slice(&replacement[..width]);
            let updated = adjust(before, &old, &replacement[..width]);
            let full = compute(&data);
            prop_assert!(updated == full || (updated, full) == (0xffff, 0) || (updated, full) == (0, 0xffff),
                "updated {updated:#06x} full {full:#06x}");
        }

        /// A partial checksum moved to new addresses, then finished, equals the checksum
        /// computed from scratch over the new pseudo-header and the data.
        #[test]
        fn partial_update_then_finish_equals_full_recompute(
            mut segment in proptest::collection::vec(any::<u8>(), 20..300),
            old_address in any::<[u8; 4]>(),
            new_address in any::<[u8; 4]>(),
            other in any::<[u8; 4]>(),
        ) {
            let length = u16::try_from(segment.len()).unwrap();
            let pseudo = |address: [u8; 4]| {
                let mut bytes = address.to_vec();
                bytes.extend_from_slice(&other);
                bytes.extend_from_slice(&[0, 6]);
                bytes.extend_from_slice(&length.to_be_bytes());
                bytes
            };
            // The field (at 16, as TCP's) holds the pseudo-header sum, as the kernel leaves it.
            segment[16..18].copy_from_slice(&fold(sum(&pseudo(old_address))).to_be_bytes());
            let partial = u16::from_be_bytes([segment[16], segment[17]]);
            let moved = adjust_partial(partial, &old_address, &new_address);
            segment[16..18].copy_from_slice(&moved.to_be_bytes());
            prop_assert!(complete_partial(&mut segment, 0, 16));
            let finished = u16::from_be_bytes([segment[16], segment[17]]);
            let mut whole = pseudo(new_address);
            whole.extend_from_slice(&segment);
            // With the finished checksum in place, the whole sums to zero (RFC 1071 check).
            let check = compute(&whole);
            prop_assert!(check == 0 || check == 0xffff, "finished {finished:#06x}, check {check:#06x}");
        }
    }

    #[test]
    fn finishing_refuses_a_field_outside_the_packet() {
        let mut short = [0u8; 10];
        assert!(!complete_partial(&mut short, 4, 6));
        assert_eq!(short, [0u8; 10]);
    }
}
