//! The security admin APIs: ACLs (Create/Describe/DeleteAcls), SCRAM
//! credentials (Describe/AlterUserScramCredentials) and client quotas
//! (Describe/AlterClientQuotas). Each checks its cluster permission first.

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::errors::{
    CLUSTER_AUTHORIZATION_FAILED, DUPLICATE_RESOURCE, INVALID_REQUEST, RESOURCE_NOT_FOUND,
    SECURITY_DISABLED, UNACCEPTABLE_CREDENTIAL, UNKNOWN_SERVER_ERROR, UNSUPPORTED_SASL_MECHANISM,
};
use super::{authz, sb};
use crate::broker::Broker;
use crate::security::acl::{
    AclBinding, AclFilter, Operation, PatternFilter, PatternType, Permission, ResourceType,
};
use crate::security::quotas::{self, Entity};
use crate::security::scram::{Mechanism, ScramCredential};
use crate::security::users::validate_username;
use crate::security::Session;

const DISABLED: &str = "ACLs need --authorizer acl";

fn denied_msg() -> Option<StrBytes> {
    Some(sb("cluster authorization failed"))
}

/// CreateAcls: Alter on the cluster.
pub fn create_acls(
    broker: &Broker,
    session: &Session,
    req: CreateAclsRequest,
) -> CreateAclsResponse {
    use create_acls_response::AclCreationResult;
    let all = |code: i16, msg: &str| {
        req.creations
            .iter()
            .map(|_| {
                AclCreationResult::default()
                    .with_error_code(code)
                    .with_error_message(Some(sb(msg)))
            })
            .collect()
    };
    if !broker.authorizer.enabled() {
        return CreateAclsResponse::default().with_results(all(SECURITY_DISABLED, DISABLED));
    }
    if !authz::cluster_allowed(broker, session, Operation::Alter) {
        return CreateAclsResponse::default().with_results(all(
            CLUSTER_AUTHORIZATION_FAILED,
            "cluster authorization failed",
        ));
    }
    let mut results = Vec::with_capacity(req.creations.len());
    let mut valid = Vec::new();
    for c in &req.creations {
        match binding_of(c) {
            Ok(b) => {
                valid.push(b);
                results.push(AclCreationResult::default());
            }
            Err(msg) => results.push(
                AclCreationResult::default()
                    .with_error_code(INVALID_REQUEST)
                    .with_error_message(Some(sb(msg))),
            ),
        }
    }
    if let Err(e) = broker.authorizer.create(&valid) {
        tracing::error!(error = %e, "could not store ACLs");
        for r in results.iter_mut().filter(|r| r.error_code == 0) {
            r.error_code = UNKNOWN_SERVER_ERROR;
            r.error_message = Some(sb(e.to_string()));
        }
    } else if !valid.is_empty() {
        tracing::info!(principal = %session.principal, count = valid.len(), "ACLs created");
    }
    CreateAclsResponse::default().with_results(results)
}

fn binding_of(c: &create_acls_request::AclCreation) -> Result<AclBinding, String> {
    let resource_type = ResourceType::from_code(c.resource_type)
        .ok_or_else(|| format!("resource type {} cannot hold ACLs", c.resource_type))?;
    let pattern_type = match c.resource_pattern_type {
        3 => PatternType::Literal,
        4 => PatternType::Prefixed,
        p => return Err(format!("pattern type {p} is not LITERAL or PREFIXED")),
    };
    let operation = Operation::from_code(c.operation)
        .ok_or_else(|| format!("operation {} is not valid", c.operation))?;
    let permission = Permission::from_code(c.permission_type)
        .ok_or_else(|| format!("permission type {} is not ALLOW or DENY", c.permission_type))?;
    let b = AclBinding {
        resource_type,
        resource_name: c.resource_name.to_string(),
        pattern_type,
        principal: c.principal.to_string(),
        host: c.host.to_string(),
        operation,
        permission,
    };
    match b.invalid() {
        Some(msg) => Err(msg),
        None => Ok(b),
    }
}

/// A wire filter; `Err` when a field holds a code no binding can have.
#[allow(clippy::too_many_arguments)]
fn filter_of(
    rtype: i8,
    name: &Option<StrBytes>,
    pattern: i8,
    principal: &Option<StrBytes>,
    host: &Option<StrBytes>,
    op: i8,
    perm: i8,
) -> Result<AclFilter, String> {
    let any_or = |code: i8, what: &str| -> Result<bool, String> {
        match code {
            1 => Ok(true),
            0 => Err(format!("unknown {what}")),
            _ => Ok(false),
        }
    };
    let resource_type = if any_or(rtype, "resource type")? {
        None
    } else {
        Some(ResourceType::from_code(rtype).ok_or_else(|| format!("resource type {rtype}"))?)
    };
    let operation = if any_or(op, "operation")? {
        None
    } else {
        Some(Operation::from_code(op).ok_or_else(|| format!("operation {op}"))?)
    };
    let permission = if any_or(perm, "permission type")? {
        None
    } else {
        Some(Permission::from_code(perm).ok_or_else(|| format!("permission type {perm}"))?)
    };
    let pattern =
        PatternFilter::from_code(pattern).ok_or_else(|| format!("pattern type {pattern}"))?;
    Ok(AclFilter {
        resource_type,
        resource_name: name.as_ref().map(|n| n.to_string()),
        pattern,
        principal: principal.as_ref().map(|p| p.to_string()),
        host: host.as_ref().map(|h| h.to_string()),
        operation,
        permission,
    })
}

/// DescribeAcls: Describe on the cluster.
pub fn describe_acls(
    broker: &Broker,
    session: &Session,
    req: &DescribeAclsRequest,
) -> DescribeAclsResponse {
    use describe_acls_response::*;
    if !broker.authorizer.enabled() {
        return DescribeAclsResponse::default()
            .with_error_code(SECURITY_DISABLED)
            .with_error_message(Some(sb(DISABLED)));
    }
    if !authz::cluster_allowed(broker, session, Operation::Describe) {
        return DescribeAclsResponse::default()
            .with_error_code(CLUSTER_AUTHORIZATION_FAILED)
            .with_error_message(denied_msg());
    }
    let filter = match filter_of(
        req.resource_type_filter,
        &req.resource_name_filter,
        req.pattern_type_filter,
        &req.principal_filter,
        &req.host_filter,
        req.operation,
        req.permission_type,
    ) {
        Ok(f) => f,
        Err(msg) => {
            return DescribeAclsResponse::default()
                .with_error_code(INVALID_REQUEST)
                .with_error_message(Some(sb(msg)))
        }
    };
    let mut resources: Vec<DescribeAclsResource> = Vec::new();
    for b in broker.authorizer.describe(&filter) {
        let acl = AclDescription::default()
            .with_principal(sb(b.principal))
            .with_host(sb(b.host))
            .with_operation(b.operation.code())
            .with_permission_type(b.permission.code());
        let same = |r: &&mut DescribeAclsResource| {
            r.resource_type == b.resource_type.code()
                && r.resource_name.as_str() == b.resource_name
                && r.pattern_type == b.pattern_type.code()
        };
        match resources.iter_mut().find(same) {
            Some(r) => r.acls.push(acl),
            None => resources.push(
                DescribeAclsResource::default()
                    .with_resource_type(b.resource_type.code())
                    .with_resource_name(sb(b.resource_name))
                    .with_pattern_type(b.pattern_type.code())
                    .with_acls(vec![acl]),
            ),
        }
    }
    DescribeAclsResponse::default().with_resources(resources)
}

/// DeleteAcls: Alter on the cluster.
pub fn delete_acls(
    broker: &Broker,
    session: &Session,
    req: DeleteAclsRequest,
) -> DeleteAclsResponse {
    use delete_acls_response::*;
    let all = |code: i16, msg: &str| {
        req.filters
            .iter()
            .map(|_| {
                DeleteAclsFilterResult::default()
                    .with_error_code(code)
                    .with_error_message(Some(sb(msg)))
            })
            .collect()
    };
    if !broker.authorizer.enabled() {
        return DeleteAclsResponse::default().with_filter_results(all(SECURITY_DISABLED, DISABLED));
    }
    if !authz::cluster_allowed(broker, session, Operation::Alter) {
        return DeleteAclsResponse::default().with_filter_results(all(
            CLUSTER_AUTHORIZATION_FAILED,
            "cluster authorization failed",
        ));
    }
    let parsed: Vec<Result<AclFilter, String>> = req
        .filters
        .iter()
        .map(|f| {
            filter_of(
                f.resource_type_filter,
                &f.resource_name_filter,
                f.pattern_type_filter,
                &f.principal_filter,
                &f.host_filter,
                f.operation,
                f.permission_type,
            )
        })
        .collect();
    let valid: Vec<AclFilter> = parsed
        .iter()
        .filter_map(|p| p.as_ref().ok().cloned())
        .collect();
    let mut removed = match broker.authorizer.delete(&valid) {
        Ok(r) => r.into_iter(),
        Err(e) => {
            return DeleteAclsResponse::default()
                .with_filter_results(all(UNKNOWN_SERVER_ERROR, &e.to_string()))
        }
    };
    let results = parsed
        .into_iter()
        .map(|p| match p {
            Err(msg) => DeleteAclsFilterResult::default()
                .with_error_code(INVALID_REQUEST)
                .with_error_message(Some(sb(msg))),
            Ok(_) => DeleteAclsFilterResult::default().with_matching_acls(
                removed
                    .next()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|b| {
                        DeleteAclsMatchingAcl::default()
                            .with_resource_type(b.resource_type.code())
                            .with_resource_name(sb(b.resource_name))
                            .with_pattern_type(b.pattern_type.code())
                            .with_principal(sb(b.principal))
                            .with_host(sb(b.host))
                            .with_operation(b.operation.code())
                            .with_permission_type(b.permission.code())
                    })
                    .collect(),
            ),
        })
        .collect::<Vec<_>>();
    let deleted: usize = results.iter().map(|r| r.matching_acls.len()).sum();
    if deleted > 0 {
        tracing::info!(principal = %session.principal, count = deleted, "ACLs deleted");
    }
    DeleteAclsResponse::default().with_filter_results(results)
}

/// DescribeUserScramCredentials: Describe on the cluster.
pub fn describe_scram(
    broker: &Broker,
    session: &Session,
    req: &DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    use describe_user_scram_credentials_response::*;
    if !authz::cluster_allowed(broker, session, Operation::Describe) {
        return DescribeUserScramCredentialsResponse::default()
            .with_error_code(CLUSTER_AUTHORIZATION_FAILED)
            .with_error_message(denied_msg());
    }
    let listed = broker.users.list();
    let result = |user: &str, creds: &[(Mechanism, u32)]| {
        DescribeUserScramCredentialsResult::default()
            .with_user(sb(user))
            .with_credential_infos(
                creds
                    .iter()
                    .map(|(m, i)| {
                        CredentialInfo::default()
                            .with_mechanism(m.kafka_type())
                            .with_iterations(i32::try_from(*i).unwrap_or(i32::MAX))
                    })
                    .collect(),
            )
    };
    let results = match req.users.as_ref().filter(|u| !u.is_empty()) {
        None => listed.iter().map(|(u, c)| result(u, c)).collect(),
        Some(users) => {
            let mut seen = std::collections::HashSet::new();
            users
                .iter()
                .map(|u| {
                    let name = u.name.as_str();
                    if !seen.insert(name.to_string()) {
                        return DescribeUserScramCredentialsResult::default()
                            .with_user(sb(name))
                            .with_error_code(DUPLICATE_RESOURCE)
                            .with_error_message(Some(sb("user named twice")));
                    }
                    match listed.iter().find(|(n, _)| n == name) {
                        Some((n, c)) => result(n, c),
                        None => DescribeUserScramCredentialsResult::default()
                            .with_user(sb(name))
                            .with_error_code(RESOURCE_NOT_FOUND)
                            .with_error_message(Some(sb(
                                "attempt to describe a user credential that does not exist",
                            ))),
                    }
                })
                .collect()
        }
    };
    DescribeUserScramCredentialsResponse::default().with_results(results)
}

/// AlterUserScramCredentials: Alter on the cluster.
pub fn alter_scram(
    broker: &Broker,
    session: &Session,
    req: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    use alter_user_scram_credentials_response::AlterUserScramCredentialsResult as R;
    let allowed = authz::cluster_allowed(broker, session, Operation::Alter);
    let res = |user: &StrBytes, code: i16, msg: Option<String>| {
        R::default()
            .with_user(user.clone())
            .with_error_code(code)
            .with_error_message(msg.map(sb))
    };
    let mut results = Vec::new();
    for d in &req.deletions {
        if !allowed {
            results.push(res(&d.name, CLUSTER_AUTHORIZATION_FAILED, None));
            continue;
        }
        let Some(m) = Mechanism::from_kafka_type(d.mechanism) else {
            results.push(res(
                &d.name,
                UNSUPPORTED_SASL_MECHANISM,
                Some("unknown SCRAM mechanism".into()),
            ));
            continue;
        };
        match broker.users.delete(d.name.as_str(), Some(m)) {
            Ok(true) => {
                tracing::info!(principal = %session.principal, user = %d.name.as_str(), mechanism = m.name(), "SCRAM credential deleted");
                results.push(res(&d.name, 0, None));
            }
            Ok(false) => results.push(res(
                &d.name,
                RESOURCE_NOT_FOUND,
                Some("attempt to delete a user credential that does not exist".into()),
            )),
            Err(e) => results.push(res(&d.name, UNKNOWN_SERVER_ERROR, Some(e.to_string()))),
        }
    }
    for u in req.upsertions {
        if !allowed {
            results.push(res(&u.name, CLUSTER_AUTHORIZATION_FAILED, None));
            continue;
        }
        let Some(m) = Mechanism::from_kafka_type(u.mechanism) else {
            results.push(res(
                &u.name,
                UNSUPPORTED_SASL_MECHANISM,
                Some("unknown SCRAM mechanism".into()),
            ));
            continue;
        };
        if let Err(msg) = validate_username(u.name.as_str()) {
            results.push(res(&u.name, UNACCEPTABLE_CREDENTIAL, Some(msg)));
            continue;
        }
        let iterations = u32::try_from(u.iterations).unwrap_or(0);
        if iterations < m.min_iterations() || iterations > Mechanism::MAX_ITERATIONS {
            results.push(res(
                &u.name,
                UNACCEPTABLE_CREDENTIAL,
                Some(format!(
                    "iterations must be between {} and {}",
                    m.min_iterations(),
                    Mechanism::MAX_ITERATIONS
                )),
            ));
            continue;
        }
        if u.salt.is_empty() || u.salted_password.is_empty() {
            results.push(res(
                &u.name,
                UNACCEPTABLE_CREDENTIAL,
                Some("empty salt or password".into()),
            ));
            continue;
        }
        let cred = ScramCredential::from_salted_password(
            m,
            &u.salted_password,
            u.salt.to_vec(),
            iterations,
        );
        match broker.users.upsert(u.name.as_str(), m, cred) {
            Ok(()) => {
                tracing::info!(principal = %session.principal, user = %u.name.as_str(), mechanism = m.name(), "SCRAM credential set");
                results.push(res(&u.name, 0, None));
            }
            Err(e) => results.push(res(&u.name, UNKNOWN_SERVER_ERROR, Some(e.to_string()))),
        }
    }
    AlterUserScramCredentialsResponse::default().with_results(results)
}

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
pub fn describe_quotas(
    broker: &Broker,
    session: &Session,
    req: &DescribeClientQuotasRequest,
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
pub fn alter_quotas(
    broker: &Broker,
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
        if let Err(e) = broker.quotas.alter(&changes) {
            for r in results.iter_mut().filter(|r| r.error_code == 0) {
                r.error_code = UNKNOWN_SERVER_ERROR;
                r.error_message = Some(sb(e.to_string()));
            }
        } else {
            for (e, ops) in &changes {
                tracing::info!(principal = %session.principal, entity = %e.describe(), ?ops, "client quotas altered");
            }
        }
    }
    AlterClientQuotasResponse::default().with_entries(results)
}
