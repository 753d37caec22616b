//! A rejected object or a bad mode label never loosens enforcement
//! (docs/design.md#invalid-objects, docs/design.md#modes): the expectations below are that
//! section's rules, applied by hand to each input.
use firewall_common::{
    Mode, PolicyVerdict,
    PolicyVerdict::{Allow, Deny},
};

use super::tests::{cfw, nsfw};
use super::*;
use crate::{model::InForce, source::file::parse_objects};

const TCP: u8 = 6;

/// Namespaces a, b and c, each with one pod on node n1: a1 (10.244.0.1), b1 (.2) and c1 (.3),
/// plus the documents `extra`.
fn model(extra: &str) -> ClusterModel {
    let base: Vec<String> = ["a", "b", "c"]
        .iter()
        .zip(1..)
        .map(|(ns, i)| {
            format!(
                "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n---\n\
                 apiVersion: v1\nkind: Pod\nmetadata: {{name: {ns}1, namespace: {ns}, uid: u{ns}1}}\n\
                 spec: {{nodeName: n1, containers: []}}\nstatus: {{podIP: 10.244.0.{i}}}\n"
            )
        })
        .collect();
    parse_objects(&format!("{}---\n{extra}", base.join("---\n"))).expect("test model parses")
}

fn opts() -> CompileOptions {
    CompileOptions {
        node_name: "n1".into(),
        ..CompileOptions::default()
    }
}

/// (verdict, policy, step) of one side of `src` -> a pod of `dst` on TCP `port`.
fn judge(m: &ClusterModel, src: &str, dst: &str, port: u16) -> [(PolicyVerdict, String, Step); 2] {
    let e = explain(
        m,
        &opts(),
        src,
        &Destination::Namespace {
            name: dst.into(),
            services: vec![],
        },
        TCP,
        port,
    );
    let side = |d: &SideDecision| (d.verdict, d.policy.clone(), d.step);
    [
        side(&e.egress),
        side(e.ingress.as_ref().expect("pod destination")),
    ]
}

fn allowed(policy: &str, step: Step) -> (PolicyVerdict, String, Step) {
    (Allow, policy.to_owned(), step)
}

fn denied(policy: &str, step: Step) -> (PolicyVerdict, String, Step) {
    (Deny, policy.to_owned(), step)
}

#[test]
fn a_rejected_object_keeps_its_last_accepted_version_until_fixed_or_deleted() {
    let good = model(&nsfw(
        "b",
        "db",
        "{ingress: [{from: {namespaces: [a]}, ports: [{port: 5432}]}]}",
    ));
    let bad = model(&nsfw(
        "b",
        "db",
        "{ingress: [{from: {namespaces: [a]}, ports: [{port: 70000}]}]}",
    ));
    let (mut ids, mut memory) = (IdAllocator::default(), Memory::default());
    let first = compile_remembering(&good, &opts(), &mut ids, &mut memory);
    assert!(first.rejected.is_empty());
    for round in 0..2 {
        let kept = compile_remembering(&bad, &opts(), &mut ids, &mut memory);
        assert_eq!(
            kept.maps, first.maps,
            "round {round}: the last accepted version is in force"
        );
        assert_eq!(kept.rules, first.rules);
        let [r] = kept.rejected.as_slice() else {
            panic!("one rejection expected: {:?}", kept.rejected);
        };
        assert_eq!(
            (r.reason.as_str(), r.in_force),
            ("InvalidSpec", InForce::LastAccepted)
        );
    }
    // Deleted, then created again invalid: nothing of it was accepted since, so it fails closed.
    compile_remembering(&model(""), &opts(), &mut ids, &mut memory);
    let again = compile_remembering(&bad, &opts(), &mut ids, &mut memory);
    assert_eq!(again.rejected[0].in_force, InForce::FailClosed);
}

#[test]
fn a_never_accepted_namespace_firewall_admits_nothing_in_the_directions_it_names() {
    let m = model(&nsfw(
        "b",
        "db",
        "{ingress: [{from: {namespaces: [a]}, ports: [{port: 70000}]}]}",
    ));
    let [egress, ingress] = judge(&m, "a", "b", 5432);
    assert_eq!(egress, allowed("default", Step::Default));
    assert_eq!(ingress, denied("NamespaceFirewall/b/db", Step::NoMatch));
    // It names no egress: b's egress is not restricted by it.
    assert_eq!(
        judge(&m, "b", "c", 80)[0],
        allowed("default", Step::Default)
    );
    // The same maps as an object that says "nothing may come in" in so many words.
    let written = model(&nsfw("b", "db", "{ingress: []}"));
    let stand_in = compile(&m, &opts(), &mut IdAllocator::default());
    assert_eq!(stand_in.rejected[0].in_force, InForce::FailClosed);
    assert_eq!(
        stand_in.maps,
        compile(&written, &opts(), &mut IdAllocator::default()).maps
    );
}

/// Asserts that b's rejected `db` denies both what comes into b (from a) and what leaves it (to c).
#[track_caller]
fn denies_both_directions_by_b_db(m: &ClusterModel) {
    assert_eq!(
        judge(m, "a", "b", 80)[1],
        denied("NamespaceFirewall/b/db", Step::NoMatch)
    );
    assert_eq!(
        judge(m, "b", "c", 80)[0],
        denied("NamespaceFirewall/b/db", Step::NoMatch)
    );
}

#[test]
fn a_namespace_firewall_that_does_not_deserialize_restricts_what_it_names() {
    // An unknown field (a CRD upgrade an older agent cannot read): both named directions.
    let m = model(&nsfw(
        "b",
        "db",
        "{ingress: [{from: {namespaces: [a]}, newField: 1}], egress: [{to: {namespaces: [c]}}]}",
    ));
    assert_eq!(m.rejected.len(), 1, "{:?}", m.rejected);
    denies_both_directions_by_b_db(&m);
    // A spec that is not even an object: both directions.
    let m = model(&nsfw("b", "db", "oops"));
    denies_both_directions_by_b_db(&m);
    // Another valid object of the namespace still allows what it allows (a union).
    let m = model(&format!(
        "{}---\n{}",
        nsfw("b", "db", "oops"),
        nsfw("b", "web", "{ingress: [{from: {namespaces: [c]}}]}")
    ));
    assert_eq!(
        judge(&m, "c", "b", 80)[1],
        allowed("NamespaceFirewall/b/web", Step::NamespaceRule)
    );
    assert_eq!(
        judge(&m, "a", "b", 80)[1],
        denied(
            "NamespaceFirewall/b/db,NamespaceFirewall/b/web",
            Step::NoMatch
        )
    );
}

#[test]
fn a_never_accepted_cluster_firewall_keeps_only_its_restrictions() {
    // rules[0] allows (opens nothing while rejected), rules[1] denies with an invalid port
    // (widened to every port), rules[2] delegates as written, rules[3]'s action is misspelt
    // (so it denies, over what it names).
    let m = model(&format!(
        "{}---\n{}",
        cfw(
            "zones",
            r#"{priority: 5, rules: [
                {action: Allow, from: {namespaces: [a]}, to: {namespaces: [b]}},
                {action: Deny, from: {namespaces: [a]}, to: {namespaces: [c]}, ports: [{port: 0}]},
                {action: Delegate, from: {namespaces: [b]}, to: {namespaces: [c]}},
                {action: Dney, from: {namespaces: [c]}, to: {namespaces: [a]}}]}"#
        ),
        cfw("later", "{priority: 6, rules: [{action: Allow}]}")
    ));
    assert_eq!(
        m.rejected.len(),
        1,
        "a misspelt action does not deserialize"
    );
    let [egress, _] = judge(&m, "a", "b", 80);
    assert_eq!(
        egress,
        allowed("ClusterFirewall/later:rules[0]", Step::ClusterRule)
    );
    for port in [22, 443] {
        assert_eq!(
            judge(&m, "a", "c", port)[0],
            denied("ClusterFirewall/zones:rules[1]", Step::ClusterRule)
        );
    }
    // Delegated: the namespaces decide (neither restricts), not `later`'s allow.
    egress_sides(
        &m,
        &[
            ("b", "c", allowed("default", Step::Default)),
            (
                "c",
                "a",
                denied("ClusterFirewall/zones:rules[3]", Step::ClusterRule),
            ),
        ],
    );
}

/// Asserts the egress side of each (source, destination namespace) on TCP 80.
fn egress_sides(m: &ClusterModel, cases: &[(&str, &str, (PolicyVerdict, String, Step))]) {
    for (src, dst, want) in cases {
        assert_eq!(&judge(m, src, dst, 80)[0], want, "{src} -> {dst}");
    }
}

#[test]
fn conflicting_defaults_are_refused_and_the_conflicting_object_keeps_its_restrictions() {
    let m = model(&format!(
        "{}---\n{}",
        cfw("a-first", "{defaults: {crossNamespace: Allow}}"),
        cfw(
            "b-second",
            "{rules: [{action: Deny, from: {namespaces: [a]}, to: {namespaces: [c]}}, {action: Allow}], defaults: {crossNamespace: Deny}}"
        )
    ));
    let c = compile(&m, &opts(), &mut IdAllocator::default());
    let [r] = c.rejected.as_slice() else {
        panic!("{:?}", c.rejected)
    };
    assert_eq!(
        (r.name.as_str(), r.reason.as_str()),
        ("b-second", "DefaultsConflict")
    );
    // Its allow opens nothing, and a-first's defaults hold.
    egress_sides(
        &m,
        &[
            (
                "a",
                "c",
                denied("ClusterFirewall/b-second:rules[0]", Step::ClusterRule),
            ),
            ("b", "c", allowed("default", Step::Default)),
        ],
    );
}

fn labelled(value: &str) -> ClusterModel {
    model(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: d, labels: {{bulkhead.dev/mode: {value}}}}}\n"
    ))
}

#[test]
fn mode_labels_are_case_insensitive_and_a_bad_one_keeps_the_last_valid_mode() {
    let mode = |c: &Compiled| c.namespace_modes["d"];
    let label = |mode| NamespaceMode {
        mode,
        source: ModeSource::Label,
    };
    let (mut ids, mut memory) = (IdAllocator::default(), Memory::default());
    for value in ["Enforce", "ENFORCE", "enforce"] {
        let c = compile_remembering(&labelled(value), &opts(), &mut ids, &mut memory);
        assert_eq!(mode(&c), label(Mode::Enforce), "{value}");
        assert!(c.invalid_mode_labels.is_empty());
    }
    let c = compile_remembering(&labelled("enforcing"), &opts(), &mut ids, &mut memory);
    let kept = NamespaceMode {
        mode: Mode::Enforce,
        source: ModeSource::LastValidLabel,
    };
    assert_eq!(mode(&c), kept);
    assert_eq!(
        c.invalid_mode_labels,
        [InvalidModeLabel {
            namespace: "d".into(),
            value: "enforcing".into(),
            in_force: kept
        }]
    );
    // Never valid: the cluster default, else the flag.
    let flag = NamespaceMode {
        mode: Mode::Monitor,
        source: ModeSource::Flag,
    };
    assert_eq!(
        mode(&compile(
            &labelled("enforcing"),
            &opts(),
            &mut IdAllocator::default()
        )),
        flag
    );
    let with_default = model(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: d, labels: {{bulkhead.dev/mode: x}}}}\n---\n{}",
        cfw("defaults", "{defaults: {mode: Enforce}}")
    ));
    let c = compile(&with_default, &opts(), &mut IdAllocator::default());
    assert_eq!(
        mode(&c),
        NamespaceMode {
            mode: Mode::Enforce,
            source: ModeSource::ClusterDefault
        }
    );
}
