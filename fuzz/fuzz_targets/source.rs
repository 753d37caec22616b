//! Arbitrary bytes as a `file:` source: parsing must never panic, whatever the YAML; whatever
//! parses must compile without panicking, and compile to the same maps twice (the agent diffs
//! against the previous compile, so non-determinism would rewrite maps for nothing).
#![no_main]

use firewall_agent::source::file::parse_objects;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(model) = parse_objects(text) else {
        return;
    };
    common::compile_twice(&model);
});
