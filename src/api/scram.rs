//! SCRAM credentials: DescribeUserScramCredentials and
//! AlterUserScramCredentials. Each checks its cluster permission first.

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
use crate::security::replicated::{Applied, Change};
use crate::security::scram::{Mechanism, ScramCredential};
use crate::security::users::validate_username;
use crate::security::Session;

/// The APIs this family serves.
pub const ROWS: &[Row] = &[
    row::<DescribeUserScramCredentials>(),
    row::<AlterUserScramCredentials>(),
];

checked_in_handler!(
    /// DescribeUserScramCredentials: Describe on the cluster.
    DescribeUserScramCredentials,
    DescribeUserScramCredentialsRequest,
    DescribeUserScramCredentialsResponse,
    (0, 0),
    describe_scram
);

checked_in_handler!(
    /// AlterUserScramCredentials: Alter on the cluster.
    AlterUserScramCredentials,
    AlterUserScramCredentialsRequest,
    AlterUserScramCredentialsResponse,
    (0, 0),
    alter_scram
);

/// DescribeUserScramCredentials: Describe on the cluster.
async fn describe_scram(
    broker: &Arc<Broker>,
    session: &Session,
    req: DescribeUserScramCredentialsRequest,
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
async fn alter_scram(
    broker: &Arc<Broker>,
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
        let change = Change::DeleteCredential {
            user: d.name.to_string(),
            mechanism: m,
        };
        match change_security(broker, change).await {
            Ok(Applied::NotFound) | Err((RESOURCE_NOT_FOUND, _)) => results.push(res(
                &d.name,
                RESOURCE_NOT_FOUND,
                Some("attempt to delete a user credential that does not exist".into()),
            )),
            Ok(_) => {
                tracing::info!(principal = %session.principal, user = %d.name.as_str(), mechanism = m.name(), "SCRAM credential deleted");
                results.push(res(&d.name, 0, None));
            }
            Err((code, msg)) => results.push(res(&d.name, code, Some(msg))),
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
        let change = Change::SetCredential {
            user: u.name.to_string(),
            mechanism: m,
            credential: cred,
        };
        match change_security(broker, change).await {
            Ok(_) => {
                tracing::info!(principal = %session.principal, user = %u.name.as_str(), mechanism = m.name(), "SCRAM credential set");
                results.push(res(&u.name, 0, None));
            }
            Err((code, msg)) => results.push(res(&u.name, code, Some(msg))),
        }
    }
    AlterUserScramCredentialsResponse::default().with_results(results)
}
