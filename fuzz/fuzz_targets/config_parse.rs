//! Arbitrary text as a config file: parsing and validation must answer Ok or an error, never
//! panic or hang; a config that parses is written back (`lbd save`'s format), parses again to
//! the same services, and builds a table snapshot and a host setup plan.
//! Run: `cargo +nightly fuzz run config_parse -- -max_total_time=600`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ulvs::{
    config,
    lvs::setup,
    table::{HealthView, ServiceTable},
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(parsed) = config::parse(text, "fuzz") else {
        return;
    };
    let saved = config::services_yaml(&parsed.services);
    let again = config::parse_services(&saved, "saved", &parsed)
        .unwrap_or_else(|error| panic!("a saved table does not load again: {error}\n{saved}"));
    assert_eq!(again, parsed.services, "saved and loaded again differ:\n{saved}");
    let _table = ServiceTable::build(&parsed, None, &HealthView::default());
    let _plan = setup::plan(&parsed, &["eth0".to_owned()], true);
});
