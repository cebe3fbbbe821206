//! `hallmark group list|members`: the policy's groups and who is in them
//! now, as the server reads the inventory when asked.

use anyhow::Result;
use clap::{Args, Subcommand};
use hallmark_server::policy::api_queries::{GroupMembersRequest, GroupSummary, Member};

use super::policy_query::{call, decode, member_name, PolicyRpc};
use crate::connect::AdminArgs;
use crate::output::{out, outln, table};

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// Every group of the policy in force: members now, conditions, and
    /// the rules using it.
    List(AdminArgs),
    /// The workloads and nodes in a group now.
    Members(MembersArgs),
}

#[derive(Args, Debug)]
pub struct MembersArgs {
    /// The group's name (`any` lists every known endpoint).
    pub name: String,
    #[command(flatten)]
    pub conn: AdminArgs,
}

pub async fn run(command: GroupCommand) -> Result<()> {
    match command {
        GroupCommand::List(conn) => list(conn).await,
        GroupCommand::Members(a) => members(a).await,
    }
}

async fn list(conn: AdminArgs) -> Result<()> {
    let json = call(&conn, PolicyRpc::ListGroups, &serde_json::json!({})).await?;
    if conn.json {
        return outln!("{json}");
    }
    let groups: Vec<GroupSummary> = decode(PolicyRpc::ListGroups, &json)?;
    let rows = groups
        .iter()
        .map(|g| {
            let blocks: Vec<String> = g.blocks.iter().map(block_text).collect();
            vec![
                g.name.clone(),
                g.members.to_string(),
                if g.name == hallmark_policy::ANY_GROUP {
                    "(every endpoint)".into()
                } else {
                    blocks.join(" or ")
                },
                if g.rules.is_empty() {
                    "-".into()
                } else {
                    g.rules.join(", ")
                },
            ]
        })
        .collect();
    out!("{}", table(&["GROUP", "MEMBERS", "MATCHES", "RULES"], rows))
}

/// A match block as the document writes it, in YAML flow style on one
/// line: `namespace: payments, labels: {tier: db}`.
fn block_text(block: &serde_json::Value) -> String {
    fn flow(v: &serde_json::Value) -> String {
        match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(items) => {
                format!(
                    "[{}]",
                    items.iter().map(flow).collect::<Vec<_>>().join(", ")
                )
            }
            serde_json::Value::Object(fields) => format!("{{{}}}", pairs(fields)),
            other => other.to_string(),
        }
    }
    fn pairs(fields: &serde_json::Map<String, serde_json::Value>) -> String {
        fields
            .iter()
            .map(|(k, v)| format!("{k}: {}", flow(v)))
            .collect::<Vec<_>>()
            .join(", ")
    }
    match block {
        serde_json::Value::Object(fields) => pairs(fields),
        other => flow(other),
    }
}

async fn members(a: MembersArgs) -> Result<()> {
    let req = GroupMembersRequest {
        group: a.name.clone(),
    };
    let json = call(&a.conn, PolicyRpc::GroupMembers, &req).await?;
    if a.conn.json {
        return outln!("{json}");
    }
    let members: Vec<Member> = decode(PolicyRpc::GroupMembers, &json)?;
    if members.is_empty() {
        return outln!("Group {} has no members now.", a.name);
    }
    let rows = members
        .iter()
        .map(|m| match m {
            Member::Workload {
                spiffe_ids,
                ips,
                image,
                ..
            } => vec![
                "workload".into(),
                member_name(m),
                if image.is_empty() {
                    "-".into()
                } else {
                    image.clone()
                },
                if spiffe_ids.is_empty() {
                    "-".into()
                } else {
                    spiffe_ids.join(", ")
                },
                if ips.is_empty() {
                    "-".into()
                } else {
                    ips.join(", ")
                },
            ],
            Member::Node { spiffe_id, .. } => vec![
                "node".into(),
                member_name(m),
                "-".into(),
                spiffe_id.clone(),
                "-".into(),
            ],
        })
        .collect();
    out!(
        "{}",
        table(&["KIND", "MEMBER", "IMAGE", "SPIFFE ID", "ADDRESSES"], rows)
    )
}

#[cfg(test)]
mod tests {
    use super::block_text;

    #[test]
    fn blocks_read_as_the_document_writes_them() {
        let b = serde_json::json!({
            "namespace": "payments",
            "labels": {"tier": "db"},
            "match_expressions": [{"key": "track", "operator": "NotIn", "values": ["canary"]}],
        });
        // Field order is the map's (insertion or sorted, by serde_json's
        // features), so each field is looked for on its own.
        let text = block_text(&b);
        for field in [
            "namespace: payments",
            "labels: {tier: db}",
            "match_expressions: [{key: track, operator: NotIn, values: [canary]}]",
        ] {
            assert!(text.contains(field), "{field} in {text}");
        }
        assert_eq!(text.matches(", ").count(), 4, "{text}");
        assert_eq!(
            block_text(&serde_json::json!({"selector": "docker:label:app:web"})),
            "selector: docker:label:app:web"
        );
    }
}
