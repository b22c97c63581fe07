//! The BROKER_LOGGER config resource (type 8): this broker's log levels,
//! described and changed while it runs (`crate::log_levels`), as Kafka's
//! `kafka-configs.sh --entity-type broker-loggers` does. Only
//! IncrementalAlterConfigs changes them, as in Kafka.

use kafka_protocol::messages::describe_configs_response::DescribeConfigsResourceResult;
use kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource;
use kafka_protocol::protocol::StrBytes;

use super::errors;
use super::route::sb;
use crate::broker::Broker;
use crate::log_levels::{self, Refused};

/// The resource type.
pub const RESOURCE_BROKER_LOGGER: i8 = 8;
/// Kafka's config source of a logger's level.
const SOURCE_DYNAMIC_BROKER_LOGGER: i8 = 6;
/// Kafka's config type STRING.
const STRING: i8 = 2;

type Failed = (i16, Option<StrBytes>);

fn check_name(broker: &Broker, name: &str) -> Result<(), Failed> {
    if name == broker.node_id().to_string() {
        Ok(())
    } else {
        Err((
            errors::INVALID_REQUEST,
            Some(sb(format!(
                "unknown broker '{name}': name this broker's id"
            ))),
        ))
    }
}

/// DescribeConfigs of resource `name`: every logger with its level.
///
/// # Errors
/// A name other than this broker's id.
pub fn describe(
    broker: &Broker,
    name: &str,
    version: i16,
    wanted: &dyn Fn(&str) -> bool,
) -> Result<Vec<DescribeConfigsResourceResult>, Failed> {
    check_name(broker, name)?;
    // Inside a test process no filter swap is installed: the flag's levels.
    let loggers = log_levels::loggers().unwrap_or_else(|| {
        log_levels::parse(&broker.config.args.log_level)
            .into_iter()
            .filter(|(_, l)| !l.is_empty())
            .map(|(t, l)| (t, l.to_ascii_uppercase()))
            .collect()
    });
    Ok(loggers
        .into_iter()
        .filter(|(n, _)| wanted(n))
        .map(|(n, level)| {
            let c = DescribeConfigsResourceResult::default()
                .with_name(sb(n))
                .with_value(Some(sb(level)))
                .with_read_only(false)
                .with_config_source(SOURCE_DYNAMIC_BROKER_LOGGER);
            if version >= 3 {
                c.with_config_type(STRING)
            } else {
                c
            }
        })
        .collect())
}

/// IncrementalAlterConfigs of the resource: SET a logger's level, DELETE
/// it (back to the root level).
///
/// # Errors
/// `INVALID_CONFIG` for a level that is not one, an operation that does
/// not apply or the root logger deleted; `INVALID_REQUEST` for another
/// broker's id, or a process that cannot change its levels.
pub fn alter(broker: &Broker, r: &AlterConfigsResource, validate_only: bool) -> Result<(), Failed> {
    check_name(broker, r.resource_name.as_str())?;
    let mut changes = Vec::with_capacity(r.configs.len());
    for c in &r.configs {
        let logger = c.name.to_string();
        match (c.config_operation, c.value.as_ref()) {
            (0, Some(v)) => changes.push((logger, Some(v.to_string()))),
            (1, _) => changes.push((logger, None)),
            (0, None) => {
                return Err((
                    errors::INVALID_CONFIG,
                    Some(sb(format!("{logger}: SET needs a level"))),
                ))
            }
            (op, _) => {
                return Err((
                    errors::INVALID_CONFIG,
                    Some(sb(format!(
                        "{logger}: operation {op} does not apply to a logger"
                    ))),
                ))
            }
        }
    }
    log_levels::apply(&changes, validate_only).map_err(|e| match e {
        Refused::Invalid(m) => (errors::INVALID_CONFIG, Some(sb(m))),
        Refused::Unavailable => (
            errors::INVALID_REQUEST,
            Some(sb("this broker process cannot change its log levels")),
        ),
    })
}
