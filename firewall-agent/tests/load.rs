//! The real eBPF object passes the kernel's verifier and attaches at a cgroup (root only).
#![allow(
    unused_crate_dependencies,
    reason = "a binary or test target links all of its package's dependencies; the library target is where unused ones are caught"
)]
use bulkhead_tests::{cgroup::TempCgroup, skip_unless_root};
use firewall_agent::{
    cgroups::cgroup2_root,
    compiler::MapContents,
    datapath::{Datapath, LoadOptions, writer::MapWriter},
};

/// A fresh cgroup below the cgroup2 mount, removed at the end of the test.
fn temp_cgroup(prefix: &str) -> TempCgroup {
    let root = cgroup2_root().expect("a cgroup2 mount");
    TempCgroup::create(&root, &format!("{prefix}-{}", std::process::id())).expect("test cgroup")
}

#[test]
fn loads_attaches_and_flips_slots() {
    skip_unless_root!("loads_attaches_and_flips_slots");
    let (mut dp, state, _events) = Datapath::load(&LoadOptions::default()).expect("load");
    let cg = temp_cgroup("bulkhead-load-test");
    dp.attach(cg.path()).expect("attach");
    let mut w = MapWriter::new(state).unwrap();
    let mut c = MapContents::default();
    c.modes.insert(2, firewall_common::Mode::Enforce as u32);
    let s = w.apply(&c).unwrap();
    assert_eq!((s.slot, s.written), (1, 1));
    let s = w.apply(&c).unwrap();
    assert_eq!((s.slot, s.written), (0, 1));
    let s = w.apply(&MapContents::default()).unwrap();
    assert_eq!((s.slot, s.deleted), (1, 1));
    drop(dp);
}

#[test]
fn a_policy_that_does_not_fit_is_refused_before_anything_is_written() {
    use firewall_agent::datapath::writer::ApplyError;
    use firewall_common::Identity;
    skip_unless_root!("a_policy_that_does_not_fit_is_refused_before_anything_is_written");
    // Room for 5 cgroup entries over both slots.
    let opts = LoadOptions {
        cgroup_entries: 5,
        ..Default::default()
    };
    let (_dp, state, _events) = Datapath::load(&opts).expect("load");
    let mut w = MapWriter::new(state).unwrap();
    let pods = |ids: std::ops::Range<u64>| MapContents {
        cgroups: ids
            .map(|id| {
                (
                    id,
                    Identity {
                        id: 2,
                        ns: 2,
                        flags: 0,
                    },
                )
            })
            .collect(),
        ..Default::default()
    };
    let first = pods(1..3);
    w.apply(&first).expect("2 entries fit");
    // 2 active + 3 new = 5: fits exactly.
    let second = pods(10..13);
    w.apply(&second).expect("fills the map exactly");
    // 3 active + 3 new = 6: refused, and the active policy is untouched.
    let third = pods(20..23);
    let slot = w.active_slot();
    match w.apply(&third) {
        Err(ApplyError::Capacity {
            map,
            needed,
            capacity,
            flag,
            ..
        }) => {
            assert_eq!(
                (map, needed, capacity, flag),
                ("CGROUPS", 6, 5, "--cgroup-entries")
            );
        }
        other => panic!("expected a capacity error, got {other:?}"),
    }
    assert_eq!(w.active_slot(), slot);
    assert_eq!(w.active_contents(), &second);
    // A smaller policy still applies afterwards.
    w.apply(&pods(30..32)).expect("3 active + 2 new fit");
}

/// Pinned state survives the process that created it: a second load reuses the pinned maps,
/// the adopted writer knows exactly what both slots hold, and the new links replace the old.
#[test]
fn pinned_maps_are_adopted_and_links_replaced() {
    use firewall_agent::datapath::pin;
    use firewall_common::{Identity, PolicyPrefix, PolicyValue, Side};
    skip_unless_root!("pinned_maps_are_adopted_and_links_replaced");
    let bpffs = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/bulkhead-load-test-{}",
        std::process::id()
    ));
    // Unpins before the cgroup (declared first) is removed.
    struct Unpin(std::path::PathBuf);
    impl Drop for Unpin {
        fn drop(&mut self) {
            let _ = pin::cleanup(&self.0);
        }
    }
    let temp = temp_cgroup("bulkhead-pin-test");
    let cg = temp.path().to_owned();
    let _unpin = Unpin(bpffs.clone());
    let opts = LoadOptions {
        pin_dir: Some(bpffs.clone()),
        cgroup_entries: 100,
        ..Default::default()
    };
    let id = |id, ns| Identity { id, ns, flags: 0 };
    let mut a = MapContents::default();
    a.cgroups.insert(42, id(3, 3));
    a.ipv4.insert(("10.1.2.0".parse().unwrap(), 24), id(4, 4));
    a.ipv6.insert(("fd00::1".parse().unwrap(), 128), id(4, 4));
    a.policy.insert(
        PolicyPrefix {
            side: Side::Egress,
            local: 3,
            peer: Some(4),
            proto: None,
            port: None,
        },
        PolicyValue {
            verdict: firewall_common::PolicyVerdict::Allow as u8,
            pad: [0; 3],
            rule: 7,
        },
    );
    a.modes.insert(3, firewall_common::Mode::Enforce as u32);
    a.default_mode = firewall_common::Mode::Monitor as u32;
    let mut b = a.clone();
    b.cgroups.insert(43, id(3, 3));

    let first_links;
    let slot;
    {
        let (mut dp, state, _events) = Datapath::load(&opts).expect("load");
        assert!(!dp.adopted(), "fresh pin dir");
        dp.attach(&cg).expect("attach");
        first_links = std::fs::read_dir(bpffs.join("links")).unwrap().count();
        assert_eq!(first_links, 4, "one pinned link per program");
        let mut w = MapWriter::adopt(state).unwrap();
        w.apply(&a).unwrap();
        w.apply(&b).unwrap();
        slot = w.active_slot();
        // Everything dropped here, as on SIGKILL: only the pins keep the state.
    }
    // A different capacity flag does not break adoption: the pinned size wins.
    let opts2 = LoadOptions {
        cgroup_entries: 500,
        ..opts
    };
    let (mut dp, state, _events) = Datapath::load(&opts2).expect("reload from pins");
    assert!(dp.adopted());
    let old: Vec<_> = std::fs::read_dir(bpffs.join("links"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dp.attach(&cg).expect("attach again");
    assert_eq!(
        dp.replaced_links().len(),
        4,
        "the old generation was replaced"
    );
    for p in &old {
        assert!(!p.exists(), "{} should be unpinned", p.display());
    }
    assert_eq!(std::fs::read_dir(bpffs.join("links")).unwrap().count(), 4);
    let mut w = MapWriter::adopt(state).unwrap();
    assert_eq!(w.capacities().cgroups, 100, "the pinned size is kept");
    assert_eq!(w.active_slot(), slot);
    assert_eq!(w.active_contents(), &b);
    // The inactive slot holds `a` exactly: bringing it to `b` writes one entry.
    let s = w.apply(&b).unwrap();
    assert_eq!((s.slot, s.written, s.deleted), (1 - slot, 1, 0));
    drop(w);
    drop(dp);
    // The programs are still attached (pinned): cleanup removes them and the directory.
    let removed = pin::cleanup(&bpffs).unwrap();
    assert!(removed.len() >= 4 + 10 + 3, "{removed:?}");
    assert!(!bpffs.exists());
    assert!(pin::cleanup(&bpffs).unwrap().is_empty(), "idempotent");
}
