#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

use super::*;

fn small(seed: u64) -> PolicyArgs {
    PolicyArgs {
        workloads: 400,
        groups: 30,
        rules: 120,
        questions: 3_000,
        rounds: 1,
        starts: 100,
        seed,
    }
}

#[test]
fn both_engines_agree_on_a_small_world_with_both_actions_deciding() {
    for seed in [1, 2, 3] {
        let r = run(&small(seed)).unwrap();
        assert_eq!(r.questions, 3_000);
        assert_eq!(r.mix.allowed + r.mix.denied, 3_000);
        // The questions aimed at rules make rules of both actions decide,
        // and the random ones reach the default.
        assert!(
            r.mix.allowed > 0 && r.mix.denied > r.mix.decided_by_default,
            "{:?}",
            r.mix
        );
        assert!(
            r.mix.decided_by_rule > 0 && r.mix.decided_by_default > 0,
            "{:?}",
            r.mix
        );
        assert!(r.membership.groups_per_workload > 1.0);
        assert_eq!(r.setup.parse_warnings, 0);
    }
}

#[test]
fn the_generated_document_has_every_kind_of_condition_and_parses() {
    let world = World::generate(300, 24, 60, 7);
    let yaml = world.hallmark_yaml();
    for key in [
        "selector:",
        "spiffe_id:",
        "namespace:",
        "labels:",
        "match_expressions:",
        "image:",
        "cidr:",
        "ports:",
        "action: deny",
        "action: allow",
    ] {
        assert!(yaml.contains(key), "no {key} in\n{yaml}");
    }
    let parsed = hallmark_policy::parse("bench.yaml", &yaml).unwrap();
    assert_eq!(parsed.document.groups.len(), 24);
    assert_eq!(parsed.document.rules.len(), 60);
    assert!(PolicySet::from_str(&world.cedar_rules()).is_ok());
}

#[test]
fn a_membership_disagreement_fails_the_run() {
    let world = World::generate(50, 12, 10, 5);
    let parsed = hallmark_policy::parse("bench.yaml", &world.hallmark_yaml()).unwrap();
    let policy = Policy::compile(&parsed.document);
    let sets: Vec<GroupSet> = world
        .workloads
        .iter()
        .map(|w| policy.groups_of(&w.attrs))
        .collect();
    let (_, _, mut cedar) = cedar_membership(&world).unwrap();
    check_membership(&world, &policy, &sets, &cedar).unwrap();
    cedar[7].insert("not-a-group".into());
    let err = check_membership(&world, &policy, &sets, &cedar).unwrap_err();
    assert!(
        err.to_string()
            .contains("disagree on the groups of 1 of 50"),
        "{err}"
    );
}

#[test]
fn a_decision_disagreement_fails_the_run() {
    let world = World::generate(200, 20, 80, 9);
    let parsed = hallmark_policy::parse("bench.yaml", &world.hallmark_yaml()).unwrap();
    let policy = Policy::compile(&parsed.document);
    let sets: Vec<GroupSet> = world
        .workloads
        .iter()
        .map(|w| policy.groups_of(&w.attrs))
        .collect();
    let (_, _, cedar_groups) = cedar_membership(&world).unwrap();
    let refs: Vec<Vec<&str>> = cedar_groups
        .iter()
        .map(|g| g.iter().map(String::as_str).collect())
        .collect();
    let entities = world::cedar_entities(&world, &refs).unwrap();
    let mut members: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, set) in sets.iter().enumerate() {
        for name in policy.names_in(set) {
            members.entry(name).or_default().push(i);
        }
    }
    let questions = world::questions(&world, &members, 500, &mut Rng::new(1));
    let connect = world::action_uid("connect").unwrap();
    let requests: Vec<Request> = questions
        .iter()
        .map(|q| world::cedar_request(&world, q, &connect).unwrap())
        .collect();
    let authorizer = Authorizer::new();
    let ask = |set: &PolicySet| -> Vec<Response> {
        requests
            .iter()
            .map(|r| authorizer.is_authorized(r, set, &entities))
            .collect()
    };
    let cedar = PolicySet::from_str(&world.cedar_rules()).unwrap();
    let mix = agree(&policy, &sets, &questions, &requests, &ask(&cedar), &cedar).unwrap();
    assert!(mix.allowed > 0 && mix.denied > 0, "{mix:?}");
    // Cedar with every forbid dropped allows what Hallmark denies by rule.
    let permits_only: String = world
        .cedar_rules()
        .split("@id(")
        .filter(|p| !p.is_empty() && !p.contains("forbid("))
        .map(|p| format!("@id({p}"))
        .collect();
    let permits_only = PolicySet::from_str(&permits_only).unwrap();
    let err = agree(
        &policy,
        &sets,
        &questions,
        &requests,
        &ask(&permits_only),
        &permits_only,
    )
    .unwrap_err();
    assert!(err.to_string().contains("the engines disagree on"), "{err}");
}

#[test]
fn the_membership_index_is_measured_at_full_size() {
    let world = World::generate(300, 20, 10, 3);
    let parsed = hallmark_policy::parse("bench.yaml", &world.hallmark_yaml()).unwrap();
    let policy = Policy::compile(&parsed.document);
    let row = membership_index(&world, &policy, 50).unwrap();
    assert_eq!(row.upsert.unwrap().count, 50);
    assert_eq!(row.remove.unwrap().count, 50);
    assert!(row.set_policy_ms > 0.0);
}
