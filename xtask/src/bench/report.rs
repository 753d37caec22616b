//! Progress on stderr and the final summary table (markdown, so it can go into the docs as is).
use serde_json::Value;

/// One progress line on stderr.
pub fn progress(msg: &str) {
    eprintln!("[bench] {msg}");
}

/// A stage banner on stderr.
pub fn stage(name: &str) {
    eprintln!("[bench] ===== stage {name} =====");
}

fn n(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn fmt(v: &Value, digits: usize) -> String {
    match n(v) {
        Some(x) if x.is_finite() => format!("{x:.digits$}"),
        _ => "-".into(),
    }
}

/// KiB as MiB.
fn mib(v: &Value) -> String {
    n(v).map(|k| format!("{:.1}", k / 1024.0))
        .unwrap_or("-".into())
}

fn x(v: &Value) -> String {
    match n(v) {
        Some(r) if r.is_finite() && r > 0.0 => format!("{r:.3}x"),
        _ => "-".into(),
    }
}

/// `a / b` as a JSON number (for ratios the JSON does not hold).
fn inv(a: &Value, b: &Value) -> Value {
    match (n(a), n(b)) {
        (Some(a), Some(b)) if b > 0.0 => Value::from(a / b),
        _ => Value::Null,
    }
}

/// The rows of the summary table: measurement, result, target, notes.
#[derive(Default)]
struct Rows(Vec<[String; 4]>);

impl Rows {
    fn add(&mut self, measurement: &str, result: String, target: &str, notes: &str) {
        self.0.push([
            measurement.to_owned(),
            result,
            target.to_owned(),
            notes.to_owned(),
        ]);
    }
}

/// Adds the rows of one stage's results.
type StageRows = fn(&Value, &mut Rows);

/// The stages in table order: the key of their results, the row that names a failed stage, and
/// the rows of a stage that ran. The floor comes first: every other program cost reads against it.
const STAGES: [(&str, &str, StageRows); 10] = [
    ("floor", "9 floor", floor_rows),
    ("paths", "10 paths", paths_rows),
    ("throughput", "1 throughput", throughput_rows),
    ("latency", "2 latency", latency_rows),
    ("progcost", "3 program cost", progcost_rows),
    ("iptables", "4 vs iptables", iptables_rows),
    ("compile", "5 compile", compile_rows),
    ("storm", "6 storm", storm_rows),
    ("kube", "7 kube", kube_rows),
    ("identities", "8 identities", identities_rows),
];

/// The summary table of everything measured in `all` (the `--out` JSON).
pub fn table(all: &Value) -> String {
    let m = &all["machine"];
    let r = &all["results"];
    let mut rows = Rows::default();
    for (key, failed, stage_rows) in STAGES {
        match r[key]["error"].as_str() {
            Some(e) => rows.add(failed, format!("FAILED: {e}"), "", ""),
            None => stage_rows(&r[key], &mut rows),
        }
    }
    let mut s = format!(
        "\nBulkhead benchmark — kernel {}, {} x {}, {} GiB RAM{}\n\n",
        m["kernel"].as_str().unwrap_or("?"),
        m["cpus"],
        m["cpu_model"].as_str().unwrap_or("?"),
        m["mem_gib"],
        if all["plan"]["quick"].as_bool() == Some(true) {
            " (--quick: smoke run, not figures to quote)"
        } else {
            ""
        }
    );
    s.push_str(&format!(
        "medians over {} repeats\n\n| measurement | result | target | notes |\n|---|---|---|---|\n",
        all["plan"]["repeats"]
    ));
    for [a, b, c, d] in rows.0 {
        s.push_str(&format!("| {a} | {b} | {c} | {d} |\n"));
    }
    s
}

/// A setup of stages 1 and 2 as the table names it.
fn setup_label(setup: &str) -> &str {
    if setup == "flows" {
        "monitor, --flow-log all"
    } else {
        setup
    }
}

/// `tcp4-bulk` -> `TCP/IPv4 bulk`.
fn workload_label(w: &str) -> String {
    let (head, kind) = w.split_once('-').unwrap_or((w, ""));
    let (proto, family) = head.split_at(head.len().saturating_sub(1));
    format!("{}/IPv{family} {kind}", proto.to_uppercase())
}

/// `+780 ns (9.76x)`: a program's distance to the floor.
fn above(h: &Value, setup: &str) -> String {
    match n(&h[format!("{setup}_above_floor_ns")]) {
        Some(d) => format!("{d:+.0} ns ({})", x(&h[format!("{setup}_ratio_to_floor")])),
        None => "-".into(),
    }
}

fn floor_rows(f: &Value, rows: &mut Rows) {
    let Some(by) = f["by_workload"].as_object() else {
        return;
    };
    let order = f["workloads"].as_array().into_iter().flatten();
    for (w, v) in order.filter_map(|w| Some((w.as_str()?, by.get(w.as_str()?)?))) {
        let hook = |hook: &str| {
            let h = &v[hook];
            format!(
                "{hook}: floor {} ns, one lookup {}, Bulkhead {}",
                fmt(&h["empty"]["ns_per_run_median"], 0),
                above(h, "lookup"),
                above(h, "bulkhead")
            )
        };
        // Only connect-each makes connect4/6 runs worth a figure (elsewhere: the 1-2 connects of
        // iperf3's control connection or of a UDP socket).
        let connect = ["connect4", "connect6"]
            .iter()
            .filter(|c| w.ends_with("connect-each") && v[**c].is_object())
            .map(|c| {
                format!(
                    "Bulkhead {c} {} ns/run",
                    fmt(&v[*c]["bulkhead"]["ns_per_run_median"], 0)
                )
            })
            .collect::<Vec<_>>();
        let paired = |hook: &str| {
            format!(
                "{hook} {:+.0} ns ({})",
                n(&v[hook]["bulkhead_above_floor_ns_paired"]).unwrap_or(f64::NAN),
                x(&v[hook]["bulkhead_ratio_to_floor_paired"])
            )
        };
        let mut notes = vec![format!(
            "Bulkhead paired per repeat: {}, {}",
            paired("egress"),
            paired("ingress")
        )];
        notes.extend(connect);
        rows.add(
            &format!("9 floor, {} (ns/run)", workload_label(w)),
            format!("{}; {}", hook("egress"), hook("ingress")),
            if w.ends_with("connect-each") {
                "first packet <= floor + 300 ns"
            } else {
                "<= floor + 40 ns"
            },
            &notes.join("; "),
        );
    }
}

/// One row per path and hook: Bulkhead, the empty program, the distance and the ratio.
fn paths_rows(p: &Value, rows: &mut Rows) {
    for v in p["paths"].as_array().into_iter().flatten() {
        rows.add(
            &format!(
                "10 paths, {} {} (ns/run)",
                v["path"].as_str().unwrap_or("?"),
                v["hook"].as_str().unwrap_or("?")
            ),
            format!(
                "Bulkhead {} ns, empty {} ns: {:+.0} ns ({})",
                fmt(&v["bulkhead_ns"], 0),
                fmt(&v["empty_ns"], 0),
                n(&v["above_empty_ns"]).unwrap_or(f64::NAN),
                x(&v["ratio_to_empty"])
            ),
            "",
            &format!(
                "{}; paired {:+.0} ns; counts {}",
                v["what"].as_str().unwrap_or(""),
                n(&v["above_empty_ns_paired"]).unwrap_or(f64::NAN),
                v["counter"].as_str().unwrap_or("?")
            ),
        );
    }
    piece_rows(p, rows);
}

/// One row per SYN piece (each SYN path and hook above the empty program, net of the input
/// read where the piece reads it), then per hook the sum of the pieces its SYN performs against
/// the measured SYN path.
fn piece_rows(p: &Value, rows: &mut Rows) {
    let pieces = p["pieces"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut names: Vec<&str> = Vec::new();
    for v in pieces {
        if let Some(name) = v["piece"].as_str()
            && !names.contains(&name)
        {
            names.push(name);
        }
    }
    let at = |v: &Value| {
        format!(
            "{} {}",
            v["path"].as_str().unwrap_or("?").trim_end_matches("-syn"),
            v["hook"].as_str().unwrap_or("?")
        )
    };
    for name in names {
        let of: Vec<&Value> = pieces.iter().filter(|v| v["piece"] == name).collect();
        let result = of
            .iter()
            .map(|v| {
                format!(
                    "{} {:+.0}",
                    at(v),
                    n(&v["above_empty_ns"]).unwrap_or(f64::NAN)
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let mut notes = Vec::new();
        if of.iter().any(|v| v["reads_input"] == true) {
            let net = of
                .iter()
                .map(|v| format!("{} {:+.0}", at(v), n(&v["net_ns"]).unwrap_or(f64::NAN)))
                .collect::<Vec<_>>()
                .join(", ");
            notes.push(format!("net of the input read: {net}"));
        }
        let missed: Vec<String> = of
            .iter()
            .filter(|v| v["found"] == false)
            .map(|v| at(v))
            .collect();
        if !missed.is_empty() {
            notes.push(format!("a miss on {}", missed.join(", ")));
        }
        rows.add(
            &format!("10 paths, piece {name} (ns/run)"),
            format!("{result} ns above empty"),
            "",
            &notes.join("; "),
        );
    }
    for hook in ["egress", "ingress"] {
        let sums: Vec<&Value> = p["piece_sums"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| v["hook"] == hook)
            .collect();
        let Some(first) = sums.first() else { continue };
        let result = sums
            .iter()
            .map(|v| {
                format!(
                    "{}: pieces {:+.0}, SYN measured {:+.0}, remainder {:+.0}",
                    v["path"].as_str().unwrap_or("?").trim_end_matches("-syn"),
                    n(&v["sum_ns"]).unwrap_or(f64::NAN),
                    n(&v["measured_above_empty_ns"]).unwrap_or(f64::NAN),
                    n(&v["remainder_ns"]).unwrap_or(f64::NAN)
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        let list = first["pieces"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| match v["times"].as_u64() {
                Some(1) | None => v["piece"].as_str().unwrap_or("?").to_owned(),
                Some(k) => format!("{k}x {}", v["piece"].as_str().unwrap_or("?")),
            })
            .collect::<Vec<_>>()
            .join(" + ");
        rows.add(
            &format!("10 paths, sum of pieces a SYN performs on {hook} (ns/run)"),
            format!("{result} ns"),
            "",
            &format!("net of the input read; {list}"),
        );
    }
}

fn throughput_rows(t: &Value, rows: &mut Rows) {
    if !t.is_object() {
        return;
    }
    let s = &t["setups"];
    rows.add(
        "1 throughput, no agent",
        format!("{} Gbit/s", fmt(&s["none"]["gbit_s_median"], 2)),
        "",
        "",
    );
    for mode in ["monitor", "enforce", "flows"] {
        rows.add(
            &format!("1 throughput, agent {}", setup_label(mode)),
            format!(
                "{} Gbit/s = {} of no agent",
                fmt(&s[mode]["gbit_s_median"], 2),
                x(&s[mode]["ratio_to_none"])
            ),
            ">= 0.98x",
            &format!("paired per repeat: {}", x(&s[mode]["paired_ratio_to_none"])),
        );
    }
}

fn latency_rows(l: &Value, rows: &mut Rows) {
    if !l.is_object() {
        return;
    }
    let s = &l["setups"];
    for (kind, label) in [
        ("connect_each", "new connection per request"),
        ("pingpong", "ping-pong on one connection"),
    ] {
        rows.add(
            &format!("2 {label}, no agent"),
            format!(
                "p50 {} us, p99 {} us",
                fmt(&s["none"][kind]["p50_us"], 1),
                fmt(&s["none"][kind]["p99_us"], 1)
            ),
            "",
            "",
        );
        for mode in ["monitor", "enforce", "flows"] {
            rows.add(
                &format!("2 {label}, agent {}", setup_label(mode)),
                format!(
                    "p50 {} us ({}), p99 {} us ({})",
                    fmt(&s[mode][kind]["p50_us"], 1),
                    x(&s[mode]["ratio_to_none"][&format!("{kind}_p50")]),
                    fmt(&s[mode][kind]["p99_us"], 1),
                    x(&s[mode]["ratio_to_none"][&format!("{kind}_p99")])
                ),
                "<= 1.05x",
                &format!(
                    "paired per repeat: p50 {}, p99 {}",
                    x(&s[mode]["paired_ratio_to_none"][&format!("{kind}_p50")]),
                    x(&s[mode]["paired_ratio_to_none"][&format!("{kind}_p99")])
                ),
            );
        }
    }
}

fn progcost_rows(pc: &Value, rows: &mut Rows) {
    let Some(by) = pc["by_rules"].as_object() else {
        return;
    };
    let base = std::iter::once((
        "baseline: 3 pods, base policy".to_owned(),
        &pc["baseline_3_pods"],
    ))
    .filter(|(_, v)| v.is_object());
    let scaled = by.iter().map(|(k, v)| (format!("{k} rules, 10k pods"), v));
    for (rules, v) in base.chain(scaled) {
        let p = &v["programs"];
        let get = |t: &str, w: &str| fmt(&p[t][w]["ns_per_run_median"], 0);
        rows.add(
            &format!("3 ns/run, {rules}"),
            format!(
                "bulk: egress {} ingress {}; new conns: egress {} ingress {} connect4 {}",
                get("cgroup_inet_egress", "bulk"),
                get("cgroup_inet_ingress", "bulk"),
                get("cgroup_inet_egress", "connect"),
                get("cgroup_inet_ingress", "connect"),
                get("cgroup_inet4_connect", "connect"),
            ),
            "<= 100 ns, flat",
            &format!("{} policy entries", fmt(&v["maps"]["policy_entries"], 0)),
        );
    }
}

fn iptables_rows(ipt: &Value, rows: &mut Rows) {
    let Some(by) = ipt["by_rules"].as_object() else {
        return;
    };
    for (rules, v) in by {
        let s = &v["setups"];
        rows.add(
            &format!("4 {rules} rules: Bulkhead / iptables"),
            format!(
                "throughput {} ({} vs {} Gbit/s), conn rate {} ({} vs {} /s), new-connection p50 {} vs {} us ({})",
                x(&v["bulkhead_over_iptables"]["throughput"]),
                fmt(&s["bulkhead"]["gbit_s_median"], 2),
                fmt(&s["iptables"]["gbit_s_median"], 2),
                x(&v["bulkhead_over_iptables"]["conn_rate"]),
                fmt(&s["bulkhead"]["conn_per_s_median"], 0),
                fmt(&s["iptables"]["conn_per_s_median"], 0),
                fmt(&s["bulkhead"]["connect_p50_us_median"], 0),
                fmt(&s["iptables"]["connect_p50_us_median"], 0),
                x(&inv(
                    &s["iptables"]["connect_p50_us_median"],
                    &s["bulkhead"]["connect_p50_us_median"]
                )),
            ),
            ">= 10x at 10,000",
            &format!(
                "stateless chain: {} Gbit/s, {} /s, p50 {} us (Bulkhead {} / {}); no firewall {} Gbit/s, {} /s, p50 {} us",
                fmt(&s["iptables-stateless"]["gbit_s_median"], 2),
                fmt(&s["iptables-stateless"]["conn_per_s_median"], 0),
                fmt(&s["iptables-stateless"]["connect_p50_us_median"], 0),
                x(&v["bulkhead_over_iptables_stateless"]["throughput"]),
                x(&v["bulkhead_over_iptables_stateless"]["conn_rate"]),
                fmt(&s["none"]["gbit_s_median"], 2),
                fmt(&s["none"]["conn_per_s_median"], 0),
                fmt(&s["none"]["connect_p50_us_median"], 0),
            ),
        );
    }
}

fn compile_rows(c: &Value, rows: &mut Rows) {
    if !c.is_object() {
        return;
    }
    rows.add(
        "5 start to ready (10k pods, 1k ns, 1k policies)",
        format!(
            "{} ms (first compile+apply {} ms)",
            fmt(&c["start_to_ready_ms"], 0),
            fmt(&c["first_apply"]["total_ms"], 1)
        ),
        "",
        "",
    );
    rows.add(
        "5 one policy change: compile + apply",
        format!(
            "p50 {} ms, p99 {} ms",
            fmt(&c["change_total_ms"]["p50"], 1),
            fmt(&c["change_total_ms"]["p99"], 1)
        ),
        "<= 100 ms",
        &format!(
            "file rename -> applied: p50 {} ms, p99 {} ms (poll {} ms)",
            fmt(&c["change_file_to_applied_ms"]["p50"], 0),
            fmt(&c["change_file_to_applied_ms"]["p99"], 0),
            c["poll_ms"]
        ),
    );
    rows.add(
        "5 agent memory",
        format!(
            "RSS {} MiB, peak (VmHWM) {} MiB",
            mib(&c["rss_kib_end"]),
            mib(&c["hwm_kib_end"])
        ),
        "<= 64 MiB",
        "",
    );
}

fn kube_rows(k: &Value, rows: &mut Rows) {
    if !k.is_object() {
        return;
    }
    let c = &k["cluster"];
    rows.add(
        &format!(
            "7 --source kube: start to ready ({} pods, {} ns, {} policy objects in the emulator)",
            c["pods"], c["namespaces"], c["policy_objects"]
        ),
        format!(
            "{} ms (first compile {} ms, first apply {} ms)",
            fmt(&k["start_to_ready_ms"], 0),
            fmt(&k["first_apply"]["compile_ms"], 1),
            fmt(&k["first_apply"]["total_ms"], 1)
        ),
        "",
        "",
    );
    rows.add(
        "7 --source kube: API write -> policy applied",
        format!(
            "p50 {} ms, p99 {} ms",
            fmt(&k["change_api_to_applied_ms"]["p50"], 0),
            fmt(&k["change_api_to_applied_ms"]["p99"], 0)
        ),
        "< 1 s",
        &format!(
            "the agent's compile + apply: p50 {} ms, p99 {} ms; {} API requests in all",
            fmt(&k["change_total_ms"]["p50"], 1),
            fmt(&k["change_total_ms"]["p99"], 1),
            k["api_requests"]
        ),
    );
    rows.add(
        "7 --source kube: agent memory",
        format!(
            "RSS {} MiB after ready, {} MiB after the changes (peak {} MiB)",
            mib(&k["rss_kib_after_ready"]),
            mib(&k["rss_kib_end"]),
            mib(&k["hwm_kib_end"])
        ),
        "<= 64 MiB",
        "",
    );
}

fn storm_rows(storm: &Value, rows: &mut Rows) {
    let Some(st) = storm.as_object() else {
        return;
    };
    for (name, v) in st {
        rows.add(
            &format!("6 denied storm, {name}"),
            format!(
                "{} attempts at {}/s: {} events/s delivered, {} lines, {} events lost ({} reported)",
                v["attempts"],
                fmt(&v["attempts_per_s"], 0),
                fmt(&v["events_per_s"], 0),
                v["lines_printed"],
                fmt(&v["events_lost"], 0),
                v["events_lost_reported"],
            ),
            "lost counted",
            &format!(
                "counts in lines: {} of {} ({} missing)",
                v["counts_total"], v["counts_expected"], v["counts_missing"]
            ),
        );
    }
}

fn identities_rows(st: &Value, rows: &mut Rows) {
    let Some(clusters) = st["clusters"].as_object() else {
        return;
    };
    for (name, c) in clusters {
        let (m, r) = (&c["median"], &c["ratio_to_bulkhead"]);
        // A median (KiB figures in MiB) with its unit, and its ratio to the baseline's.
        let v = |f: &str, digits: usize, unit: &str| {
            let value = if f.ends_with("_kib_end") {
                n(&m[f]).map(|k| k / 1024.0).into()
            } else {
                m[f].clone()
            };
            format!("{}{unit} ({})", fmt(&value, digits), x(&r[f]))
        };
        rows.add(
            &format!("8 standard policies at 10k pods: {name}"),
            format!(
                "{}, {}, change compile + apply {}, RSS {}",
                v("identities", 0, " identities"),
                v("policy_entries", 0, " policy entries"),
                v("change_total_ms", 1, " ms"),
                v("rss_kib_end", 1, " MiB"),
            ),
            if name == "namespace-only" {
                "identities ~1x"
            } else {
                ""
            },
            &format!(
                "first compile + apply {}, change compile {}, peak {}; paired per repeat: change {}, RSS {}{}",
                v("first_total_ms", 1, " ms"),
                v("change_compile_ms", 1, " ms"),
                v("hwm_kib_end", 1, " MiB"),
                x(&c["paired_ratio_to_bulkhead"]["change_total_ms"]),
                x(&c["paired_ratio_to_bulkhead"]["rss_kib_end"]),
                if c["changes_fit_default_policy_capacity"] == false {
                    format!(
                        "; **a change does not fit the default policy map** (2 x entries > {})",
                        st["default_policy_map_capacity"]
                    )
                } else {
                    String::new()
                },
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_labels() {
        assert_eq!(workload_label("tcp4-connect-each"), "TCP/IPv4 connect-each");
        assert_eq!(workload_label("udp6-pingpong"), "UDP/IPv6 pingpong");
    }
}
