//! Arbitrary bytes at the start of a connection to an `accept_proxy` service: the parser must
//! answer every input with a header, "incomplete" or an error, never panic; a header it takes
//! is never longer than the input, and its addresses write back to a header that reads the
//! same. Run: `cargo +nightly fuzz run proxy_header -- -max_total_time=600`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ulvs::proxy_header::{Header, ParseError, Transport, Version, parse};

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(received) => {
            assert!(received.len <= data.len());
            // Every shorter prefix of a header is incomplete or already wrong, never taken.
            assert!(!matches!(parse(&data[..received.len - 1]), Ok(_)));
            if let Some((source, destination)) = received.addresses {
                for version in [Version::V1, Version::V2] {
                    let header = Header::new(version, Transport::Stream, source, destination);
                    let again = parse(header.as_bytes()).expect("a written header reads back");
                    let canonical = |a: std::net::SocketAddr| (a.ip().to_canonical(), a.port());
                    let (s, d) = again.addresses.expect("addresses");
                    assert_eq!((canonical(s), canonical(d)), (canonical(source), canonical(destination)));
                }
            }
        }
        Err(ParseError::Incomplete) => assert!(data.len() < ulvs::proxy_header::V2_MAX),
        Err(ParseError::Invalid(_)) => {}
    }
});
