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
    }
}
