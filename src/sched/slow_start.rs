//! Slow start: the weight (and connection cap) a real is scheduled with while it ramps up
//! after coming up or being added, as HAProxy's `slowstart`. The share grows linearly over the
//! window from a small one (never 0: the real takes some flows at once) to the real's own, so
//! a real that returns with no flows is not flooded by `lc`/`wlc`, which would otherwise send it
//! every new flow until it caught up. Pure.

/// The weight and `max_conns` of a real of `weight` and `max_conns` (0: no cap), `elapsed` ms
/// into a slow start of `window` ms; the real's own once the window is over.
pub fn ramped(weight: u32, max_conns: u32, elapsed: u64, window: u64) -> (u32, u32) {
    if elapsed >= window || window == 0 {
        return (weight, max_conns);
    }
    // ceil(value × elapsed / window), at least 1 (0 stays 0: a quiesced real stays quiesced).
    let share = |value: u32| -> u32 {
        if value == 0 {
            return 0;
        }
        let scaled = (u64::from(value) * elapsed).div_ceil(window);
        u32::try_from(scaled).unwrap_or(value).clamp(1, value)
    };
    (share(weight), share(max_conns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_grows_linearly_from_a_sliver_to_the_whole() {
        // Weight 100 over 60 s.
        assert_eq!(ramped(100, 0, 0, 60_000), (1, 0), "a sliver at once, never 0");
        assert_eq!(ramped(100, 0, 15_000, 60_000).0, 25);
        assert_eq!(ramped(100, 0, 30_000, 60_000).0, 50);
        assert_eq!(ramped(100, 0, 59_999, 60_000).0, 100);
        assert_eq!(ramped(100, 0, 60_000, 60_000).0, 100);
        assert_eq!(ramped(100, 0, 90_000, 60_000).0, 100);
        // The connection cap follows; no cap stays none, weight 0 stays 0.
        assert_eq!(ramped(10, 200, 30_000, 60_000), (5, 100));
        assert_eq!(ramped(0, 200, 30_000, 60_000), (0, 100));
        // Never above the real's own, whatever the numbers.
        for elapsed in [0, 1, 7, 599, 600] {
            let (weight, cap) = ramped(u32::MAX, u32::MAX, elapsed, 600);
            assert!(weight >= 1 && cap >= 1);
        }
    }
}
