//! Arbitrary datagrams on the sync socket: a backup must answer every one with entries or an
//! error, never panic, and what it accepts must write back to a message that reads the same.
//! Run: `cargo +nightly fuzz run sync_message -- -max_total_time=600`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ulvs::packet::sync::{MAX_MESSAGE_LEN, MessageWriter, decode};

fuzz_target!(|data: &[u8]| {
    let Ok(message) = decode(data, 0) else {
        return;
    };
    let mut writer = MessageWriter::new(message.syncid, usize::from(u16::MAX));
    for conn in &message.conns {
        if !writer.push(conn) {
            return;
        }
    }
    let again = decode(&writer.take(), 0).expect("a written message reads back");
    assert_eq!(again.conns, message.conns);
    let _ = MAX_MESSAGE_LEN;
});
