//! The real eBPF object passes the kernel's verifier and attaches at a cgroup (root only).
use firewall_agent::datapath::{
    Datapath, LoadOptions,
    writer::{MapContents, MapWriter},
};

#[test]
fn loads_attaches_and_flips_slots() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED loads_attaches_and_flips_slots: needs root to load eBPF programs");
        return;
    }
    let (mut dp, state, _events) = Datapath::load(&LoadOptions::default()).expect("load");
    let root = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.contains(" - cgroup2 "))
        .map(|l| l.split_whitespace().nth(4).unwrap().to_owned())
        .unwrap();
    let dir =
        std::path::Path::new(&root).join(format!("bulkhead-load-test-{}", std::process::id()));
    std::fs::create_dir(&dir).unwrap();
    // Removes the cgroup even when an assertion below fails (the kernel detaches any links left on it).
    struct Rmdir(std::path::PathBuf);
    impl Drop for Rmdir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _guard = Rmdir(dir.clone());
    dp.attach(&dir).expect("attach");
    let mut w = MapWriter::new(state).unwrap();
    let mut c = MapContents::default();
    c.modes.insert(2, firewall_common::MODE_ENFORCE);
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
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "SKIPPED a_policy_that_does_not_fit_is_refused_before_anything_is_written: needs root"
        );
        return;
    }
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
