//! ACLs: CreateAcls, DescribeAcls and DeleteAcls. Each checks its cluster
//! permission first.

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::authz::{self, cluster_denied_msg as denied_msg};
use super::errors::*;
use super::route::sb;
use super::route::{checked_in_handler, row, Row};
use std::sync::Arc;

use super::quorum::change_security;
use crate::broker::Broker;
use crate::security::acl::{
    AclBinding, AclFilter, Operation, PatternFilter, PatternType, Permission, ResourceType,
};
use crate::security::replicated::{Applied, Change};
use crate::security::Session;

/// The APIs this family serves.
pub const ROWS: &[Row] = &[
    row::<CreateAcls>(),
    row::<DescribeAcls>(),
    row::<DeleteAcls>(),
];

const DISABLED: &str = "ACLs need --authorizer acl";

checked_in_handler!(
    /// CreateAcls: Alter on the cluster.
    CreateAcls,
    CreateAclsRequest,
    CreateAclsResponse,
    (1, 3),
    create_acls
);

checked_in_handler!(
    /// DescribeAcls: Describe on the cluster.
    DescribeAcls,
    DescribeAclsRequest,
    DescribeAclsResponse,
    (1, 3),
    describe_acls
);

checked_in_handler!(
    /// DeleteAcls: Alter on the cluster.
    DeleteAcls,
    DeleteAclsRequest,
    DeleteAclsResponse,
    (1, 3),
    delete_acls
);

/// CreateAcls: Alter on the cluster.
async fn create_acls(
    broker: &Arc<Broker>,
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
    if valid.is_empty() {
        return CreateAclsResponse::default().with_results(results);
    }
    let count = valid.len();
    if let Err((code, msg)) = change_security(broker, Change::CreateAcls(valid)).await {
        tracing::error!(error = %msg, "could not store ACLs");
        for r in results.iter_mut().filter(|r| r.error_code == 0) {
            r.error_code = code;
            r.error_message = Some(sb(msg.clone()));
        }
    } else {
        tracing::info!(principal = %session.principal, count, "ACLs created");
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
async fn describe_acls(
    broker: &Arc<Broker>,
    session: &Session,
    req: DescribeAclsRequest,
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
async fn delete_acls(
    broker: &Arc<Broker>,
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
    let mut removed = match change_security(broker, Change::DeleteAcls(valid)).await {
        Ok(Applied::Removed(r)) => r.into_iter(),
        Ok(_) => Vec::new().into_iter(),
        Err((code, msg)) => {
            return DeleteAclsResponse::default().with_filter_results(all(code, &msg))
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
