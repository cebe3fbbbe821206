//! Hallmark policy: groups of endpoints defined by identity, rules between
//! groups, and the decisions they make.
//!
//! This crate is pure (no I/O, no clock, no async). The server validates
//! and versions documents with it; agents, the CLI's `policy check`, audit
//! and dry-run all decide with the same [`Policy`], so every decision is
//! the one enforcement makes. Suggestions from observed traffic come from
//! [`suggest`].
//!
//! # The document
//!
//! ```yaml
//! groups:
//!   web:
//!     - selector: docker:label:app:web
//!   payments-db:
//!     - spiffe_id: spiffe://example.org/payments/db/*
//!     - namespace: payments
//!       labels: {tier: db}
//!   corp:
//!     - cidr: 10.8.0.0/16
//! rules:
//!   - name: web-to-db
//!     from: [web]
//!     to: [payments-db]
//!     protocol: tcp          # tcp | udp | any (default any)
//!     ports: ["5432", "8000-8100"]   # the acceptor's; absent = every port
//!     action: allow          # allow | deny
//!     mode: enforce          # enforce | watch (default enforce)
//!     priority: 100          # default 1000; lower first
//! default: allow             # allow | deny (default allow)
//! ```
//!
//! Unknown keys anywhere are errors. Block conditions are `spiffe_id`,
//! `selector`, `namespace`, `labels` (a map), `match_expressions` (a list
//! of `{key, operator: In|NotIn|Exists|DoesNotExist, values}`), `image`,
//! `context`, `node` and `cidr`. The group `any` is reserved: it matches
//! every endpoint, attributed or not, may be used in rules and may not be
//! defined. [`parse`] refuses a bad document whole, listing every error as
//! `FILE:LINE: rule `web-to-db`: unknown group `pay-db` in to`; a block or
//! group that can never match (label conditions that contradict each
//! other) is a warning. Names are 1-128 letters, digits, `-`, `_`, `.`.
//!
//! # Endpoints and membership
//!
//! An endpoint is what attribution knows ([`Attributes`]): a workload, a
//! host process, an address alone (unattributed or external), or a bare
//! SPIFFE ID (checking a design before deploying it). A group matches an
//! endpoint when any of its blocks does; a block when every condition in
//! it holds:
//!
//! - `spiffe_id`: one of the endpoint's SPIFFE IDs equals it, or matches it
//!   as a glob: `*` matches within one path segment (`spiffe://td/ns/*/sa/db`,
//!   `spiffe://td/sa/web-*`); a last segment of exactly `*` matches one or
//!   more segments below the path at any depth (`spiffe://td/ns/payments/*`
//!   matches `.../payments/sa/db`, not `.../payments` itself), as in
//!   `flows list`. The trust domain is literal.
//! - `selector`: the endpoint holds exactly that selector.
//! - `namespace`, `context`, `node`: exact equality.
//! - `image`: the image reference equals it; `*` matches any run of
//!   characters (`registry.example/pay/*`, `nginx:*`). An endpoint without
//!   an image matches no `image` condition, not even `*`.
//! - `labels`: every key is present with that value.
//! - `match_expressions`: Kubernetes semantics (`NotIn` and `DoesNotExist`
//!   hold when the key is absent), but only on an attested endpoint (one
//!   with selectors, labels, namespace, image, context or node): the labels
//!   of a bare SPIFFE ID or an address are unknown, not empty, so no
//!   expression holds for them. So a bare SPIFFE ID matches only
//!   `spiffe_id` conditions (and `any`).
//! - `cidr`: the endpoint's address is inside (an IPv4-mapped IPv6 address
//!   counts as its IPv4 address); an endpoint without an address is not.
//!
//! # Decisions
//!
//! A rule matches a flow (initiator -> acceptor, protocol, acceptor's port)
//! when the initiator is in one of `from`, the acceptor in one of `to`,
//! the protocol matches (`any` matches TCP and UDP) and the port is in
//! `ports` (or `ports` is absent). An evaluation takes the rules in
//! ascending priority; the first priority level with a matching rule
//! decides; within it deny beats allow, and among rules of the same action
//! the first in document order is named. With no match, `default` decides.
//!
//! There are two evaluations: **enforced**, over enforce-mode rules only,
//! and **full**, over all rules. The [`Verdict`]:
//!
//! - enforced says deny: [`Outcome::Denied`], by that enforce rule or the
//!   default;
//! - else full says deny (a watch rule): [`Outcome::WouldDeny`], by that
//!   watch rule;
//! - else [`Outcome::Allowed`], by the rule that decided the full
//!   evaluation, or the default.
//!
//! So a watch-mode allow in front of an enforce-mode deny does not lift the
//! deny, and a watch-mode deny never blocks. [`Outcome::NoDecision`] is for
//! callers to give a flow with an unattributed end; [`Policy::decide`]
//! never returns it. Verdicts serialize with lowercase names (`allowed`,
//! `denied`, `would-deny`, `no-decision`).
//!
//! # Cost
//!
//! [`Policy::groups_of`] evaluates every group once per endpoint; callers
//! cache the [`GroupSet`] ([`Membership`] keeps them for many endpoints,
//! one `groups_of` per change). [`Policy::decide`] visits each (initiator group,
//! acceptor group) pair that some rule names (a bitset intersection finds
//! them), one hash lookup and one binary search each, and allocates
//! nothing.
//!
//! # Kernel images
//!
//! [`Policy::port_segments`] gives, for an (initiator, acceptor, protocol),
//! the runs of ports with one verdict, built from the same tables a
//! decision visits. [`compile_kernel`] turns a policy, a node's workloads
//! and the peers it talks to into a [`KernelImage`]: numeric identities
//! for the distinct combinations of groups, peer addresses and `cidr`
//! prefixes mapped to them for longest-prefix match, and per (local
//! identity, remote identity, protocol, direction) the port segments with
//! the kernel verdict and deciding rule. Looking a flow up in the image
//! gives what [`Policy::decide`] gives; an image over its
//! [`KernelLimits`] is a [`KernelError`], never a silently smaller one.

#![forbid(unsafe_code)]

mod attributes;
mod diagnostic;
mod document;
mod engine;
mod kernel;
mod membership;
mod parse;
mod suggest;
mod yaml;

pub use attributes::Attributes;
pub use diagnostic::{Diagnostic, PolicyErrors, Severity, Subject};
pub use document::{
    check_label_key, check_label_value, check_name, Action, Block, Cidr, Group, ImagePattern,
    MatchExpression, Mode, Operator, PolicyDocument, PortRange, Protocol, ProtocolMatch, Rule,
    SpiffePattern, ANY_GROUP, DEFAULT_PRIORITY, MAX_NAME_LEN,
};
pub use engine::{DecidedBy, GroupSet, Outcome, Policy, Verdict};
pub use kernel::{
    compile_kernel, Direction, KernelError, KernelImage, KernelLimits, KernelVerdict, PairKey,
    Segment,
};
pub use membership::Membership;
pub use parse::{parse, Parsed};
pub use suggest::{suggest, to_yaml, Observed, SuggestBy, CATCH_ALL_RULE};

#[cfg(test)]
#[path = "mutation_tests.rs"]
mod mutation_tests;
