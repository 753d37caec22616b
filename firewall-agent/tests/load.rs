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
