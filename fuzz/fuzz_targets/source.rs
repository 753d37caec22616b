//! Arbitrary bytes as a `file:` source: parsing must never panic, whatever the YAML; whatever
//! parses must compile without panicking, and compile to the same maps twice (the agent diffs
//! against the previous compile, so non-determinism would rewrite maps for nothing).
#![no_main]

use firewall_agent::{
    compiler::{CompileOptions, IdAllocator, compile},
    source::file::parse_objects,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(model) = parse_objects(text) else {
        return;
    };
    let opts = CompileOptions {
        node_name: "node-1".into(),
        ..Default::default()
    };
    let a = compile(&model, &opts, &mut IdAllocator::default());
    let b = compile(&model, &opts, &mut IdAllocator::default());
    assert_eq!(a.policy, b.policy, "compile is not deterministic");
    assert_eq!(a.ipv4, b.ipv4, "compile is not deterministic");
});
