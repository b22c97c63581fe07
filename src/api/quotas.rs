//! Client quotas: DescribeClientQuotas and AlterClientQuotas. Each checks
//! its cluster permission first.

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::authz::{self, cluster_denied_msg as denied_msg};
use super::errors::*;
use super::route::sb;
use super::route::{checked_in_handler, row, Row};
use std::sync::Arc;

use super::quorum::change_security;
use crate::broker::Broker;
use crate::security::acl::Operation;
use crate::security::quotas::{self, Entity};
use crate::security::replicated::Change;
use crate::security::Session;

/// The APIs this family serves.
pub const ROWS: &[Row] = &[row::<DescribeClientQuotas>(), row::<AlterClientQuotas>()];

checked_in_handler!(
    /// DescribeClientQuotas: DescribeConfigs on the cluster.
    DescribeClientQuotas,
    DescribeClientQuotasRequest,
    DescribeClientQuotasResponse,
    (0, 1),
    describe_quotas
);

checked_in_handler!(
    /// AlterClientQuotas: AlterConfigs on the cluster.
    AlterClientQuotas,
    AlterClientQuotasRequest,
    AlterClientQuotasResponse,
    (0, 1),
    alter_quotas
);

/// Reads a wire entity (`user` / `client-id` components; a `None` name is
/// the default).
fn entity_of<'a>(
    parts: impl Iterator<Item = (&'a StrBytes, &'a Option<StrBytes>)>,
) -> Result<Entity, String> {
    let mut e = Entity {
        user: None,
        client_id: None,
    };
    for (kind, name) in parts {
        let name = name.as_ref().map(|n| n.to_string());
        let slot = match kind.as_str() {
            "user" => &mut e.user,
            "client-id" => &mut e.client_id,
            other => {
                return Err(format!(
                    "entity type {other:?} is not supported (user, client-id)"
                ))
            }
        };
        if slot.is_some() {
            return Err(format!("entity type {:?} given twice", kind.as_str()));
        }
        *slot = Some(name);
    }
    if e.user.is_none() && e.client_id.is_none() {
        return Err("empty entity".into());
    }
    Ok(e)
}

/// DescribeClientQuotas: DescribeConfigs on the cluster.
async fn describe_quotas(
    broker: &Arc<Broker>,
    session: &Session,
    req: DescribeClientQuotasRequest,
) -> DescribeClientQuotasResponse {
    use describe_client_quotas_response::*;
    if !authz::cluster_allowed(broker, session, Operation::DescribeConfigs) {
        return DescribeClientQuotasResponse::default()
            .with_error_code(CLUSTER_AUTHORIZATION_FAILED)
            .with_error_message(denied_msg());
    }
    for (i, c) in req.components.iter().enumerate() {
        // Kafka: a known entity type, once; EXACT (0) names what it matches.
        let repeated = req.components[..i]
            .iter()
            .any(|o| o.entity_type == c.entity_type);
        if !matches!(c.entity_type.as_str(), "user" | "client-id")
            || !(0..=2).contains(&c.match_type)
            || (c.match_type == 0 && c._match.is_none())
            || repeated
        {
            return DescribeClientQuotasResponse::default()
                .with_error_code(INVALID_REQUEST)
                .with_error_message(Some(sb(format!(
                    "cannot filter on entity type {:?} with match type {}",
                    c.entity_type.as_str(),
                    c.match_type
                ))));
        }
    }
    let component = |e: &Entity, kind: &str| -> Option<Option<String>> {
        match kind {
            "user" => e.user.clone(),
            _ => e.client_id.clone(),
        }
    };
    let entries = broker
        .quotas
        .all()
        .into_iter()
        .filter(|(e, _)| {
            let ok = req.components.iter().all(|c| {
                match (component(e, c.entity_type.as_str()), c.match_type) {
                    (Some(Some(n)), 0) => c._match.as_ref().is_some_and(|m| m.as_str() == n),
                    (Some(None), 1) => true,
                    (Some(_), 2) => true,
                    _ => false,
                }
            });
            // Strict: the entity has no component beyond those filtered.
            let extra = [
                ("user", e.user.is_some()),
                ("client-id", e.client_id.is_some()),
            ]
            .into_iter()
            .any(|(k, present)| {
                present && !req.components.iter().any(|c| c.entity_type.as_str() == k)
            });
            ok && !(req.strict && extra)
        })
        .map(|(e, values)| {
            let mut entity = Vec::new();
            if let Some(u) = &e.user {
                entity.push(
                    EntityData::default()
                        .with_entity_type(sb("user"))
                        .with_entity_name(u.clone().map(sb)),
                );
            }
            if let Some(c) = &e.client_id {
                entity.push(
                    EntityData::default()
                        .with_entity_type(sb("client-id"))
                        .with_entity_name(c.clone().map(sb)),
                );
            }
            EntryData::default().with_entity(entity).with_values(
                values
                    .into_iter()
                    .map(|(k, v)| ValueData::default().with_key(sb(k)).with_value(v))
                    .collect(),
            )
        })
        .collect();
    DescribeClientQuotasResponse::default().with_entries(Some(entries))
}

/// AlterClientQuotas: AlterConfigs on the cluster.
async fn alter_quotas(
    broker: &Arc<Broker>,
    session: &Session,
    req: AlterClientQuotasRequest,
) -> AlterClientQuotasResponse {
    use alter_client_quotas_response::{EntityData, EntryData};
    let allowed = authz::cluster_allowed(broker, session, Operation::AlterConfigs);
    let mut results = Vec::new();
    let mut changes = Vec::new();
    for entry in &req.entries {
        let echo: Vec<EntityData> = entry
            .entity
            .iter()
            .map(|e| {
                EntityData::default()
                    .with_entity_type(e.entity_type.clone())
                    .with_entity_name(e.entity_name.clone())
            })
            .collect();
        let outcome = if !allowed {
            Err((
                CLUSTER_AUTHORIZATION_FAILED,
                "cluster authorization failed".to_string(),
            ))
        } else {
            entity_of(
                entry
                    .entity
                    .iter()
                    .map(|e| (&e.entity_type, &e.entity_name)),
            )
            .map_err(|m| (INVALID_REQUEST, m))
            .and_then(|entity| {
                let mut ops = Vec::new();
                for op in &entry.ops {
                    let key = op.key.as_str();
                    if !quotas::KEYS.contains(&key) {
                        return Err((INVALID_REQUEST, format!("unknown quota key {key:?}")));
                    }
                    if op.remove {
                        ops.push((key.to_string(), None));
                    } else if !(op.value.is_finite() && op.value > 0.0) {
                        return Err((INVALID_REQUEST, format!("{key} must be a positive number")));
                    } else {
                        ops.push((key.to_string(), Some(op.value)));
                    }
                }
                Ok((entity, ops))
            })
        };
        match outcome {
            Ok(change) => {
                changes.push(change);
                results.push(EntryData::default().with_entity(echo));
            }
            Err((code, msg)) => results.push(
                EntryData::default()
                    .with_entity(echo)
                    .with_error_code(code)
                    .with_error_message(Some(sb(msg))),
            ),
        }
    }
    if !req.validate_only && !changes.is_empty() {
        let logged: Vec<String> = changes
            .iter()
            .map(|(e, ops)| format!("{} {ops:?}", e.describe()))
            .collect();
        if let Err((code, msg)) = change_security(broker, Change::AlterQuotas(changes)).await {
            for r in results.iter_mut().filter(|r| r.error_code == 0) {
                r.error_code = code;
                r.error_message = Some(sb(msg.clone()));
            }
        } else {
            for change in &logged {
                tracing::info!(principal = %session.principal, %change, "client quotas altered");
            }
        }
    }
    AlterClientQuotasResponse::default().with_entries(results)
}
