//! Log levels changed while the broker runs: Kafka's BROKER_LOGGER
//! resource (DescribeConfigs, IncrementalAlterConfigs; `kafka-configs.sh
//! --entity-type broker-loggers`).
//!
//! The loggers are tracing targets (`weir`, `weir::group`, `openraft`, ...)
//! plus `root`, the level of every target not named. The levels set are
//! kept as one filter directive (`info,weir::group=debug`); the binary
//! installs the function that swaps its subscriber's filter for a new one
//! ([`install`]). A broker started without it (inside a test process)
//! describes its loggers and refuses changes.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use parking_lot::Mutex;

/// Swaps the subscriber's filter for the directive given.
pub type Reload = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// The logger that names every target not named otherwise.
pub const ROOT: &str = "root";

/// The levels Kafka's loggers take, and tracing's for them.
const LEVELS: &[(&str, &str)] = &[
    ("TRACE", "trace"),
    ("DEBUG", "debug"),
    ("INFO", "info"),
    ("WARN", "warn"),
    ("ERROR", "error"),
    ("FATAL", "error"),
    ("OFF", "off"),
];

struct Control {
    reload: Reload,
    /// Logger → level (tracing's name), `root` included.
    levels: Mutex<BTreeMap<String, String>>,
}

static CONTROL: OnceLock<Control> = OnceLock::new();

/// The loggers of a filter directive: `root` for the bare level, the
/// others by target. Parts that name spans or fields are kept as they are
/// under their whole text.
pub fn parse(directive: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for part in directive
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        match part.split_once('=') {
            Some((target, level)) if !target.contains('[') => {
                out.insert(target.to_string(), level.to_ascii_lowercase());
            }
            Some(_) => {
                out.insert(part.to_string(), String::new());
            }
            None => {
                out.insert(ROOT.to_string(), part.to_ascii_lowercase());
            }
        }
    }
    out
}

/// The filter directive of `levels`.
pub fn directive(levels: &BTreeMap<String, String>) -> String {
    let mut parts: Vec<String> = levels
        .get(ROOT)
        .map(|l| vec![l.clone()])
        .unwrap_or_default();
    for (target, level) in levels.iter().filter(|(t, _)| *t != ROOT) {
        if level.is_empty() {
            parts.push(target.clone());
        } else {
            parts.push(format!("{target}={level}"));
        }
    }
    parts.join(",")
}

/// Registers the binary's filter swap and the directive it started with.
/// A second call is ignored.
pub fn install(initial: &str, reload: Reload) {
    let _ = CONTROL.set(Control {
        reload,
        levels: Mutex::new(parse(initial)),
    });
}

/// Every logger with its level (Kafka's names: `INFO`, ...), or `None` when
/// no filter swap is installed.
pub fn loggers() -> Option<BTreeMap<String, String>> {
    let c = CONTROL.get()?;
    let levels = c.levels.lock();
    Some(
        levels
            .iter()
            .filter(|(_, l)| !l.is_empty())
            .map(|(t, l)| (t.clone(), l.to_ascii_uppercase()))
            .collect(),
    )
}

/// A change to one logger: `Some(level)` sets it, `None` takes it back to
/// the root level (the root logger itself cannot be taken away).
pub type Change = (String, Option<String>);

/// Why a change is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Not a level, or the root logger deleted: INVALID_CONFIG.
    Invalid(String),
    /// No filter swap installed.
    Unavailable,
}

/// Checks and applies `changes` as one new filter.
///
/// # Errors
/// A change that is not valid (nothing is applied), or no filter swap.
pub fn apply(changes: &[Change], validate_only: bool) -> Result<(), Refused> {
    let c = CONTROL.get().ok_or(Refused::Unavailable)?;
    let mut levels = c.levels.lock();
    let mut next = levels.clone();
    for (logger, level) in changes {
        if logger.is_empty() || logger.contains([',', '=', '[', ' ']) {
            return Err(Refused::Invalid(format!("{logger:?} is not a logger name")));
        }
        match level {
            Some(l) => {
                let Some((_, tracing_level)) = LEVELS
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(l.trim()))
                else {
                    return Err(Refused::Invalid(format!(
                        "{l:?} is not a log level (TRACE, DEBUG, INFO, WARN, ERROR, FATAL, OFF)"
                    )));
                };
                next.insert(logger.clone(), (*tracing_level).to_string());
            }
            None if logger == ROOT => {
                return Err(Refused::Invalid("the root logger cannot be removed".into()));
            }
            None => {
                next.remove(logger);
            }
        }
    }
    if validate_only {
        return Ok(());
    }
    (c.reload)(&directive(&next)).map_err(Refused::Invalid)?;
    for (logger, level) in changes {
        tracing::info!(logger = %logger, level = ?level, "log level changed");
    }
    *levels = next;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_round_trip_through_loggers() {
        let d = "info,openraft=off,weir::group=DEBUG";
        let l = parse(d);
        assert_eq!(l[ROOT], "info");
        assert_eq!(l["weir::group"], "debug");
        assert_eq!(directive(&l), "info,openraft=off,weir::group=debug");
        let spans = parse("warn,weir[conn]=trace");
        assert_eq!(directive(&spans), "warn,weir[conn]=trace");
    }

    #[test]
    fn changes_are_checked_and_applied_as_one_filter() {
        static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());
        install(
            "info,openraft=off",
            Box::new(|d| {
                SEEN.lock().push(d.to_string());
                Ok(())
            }),
        );
        let set = |l: &str, v: Option<&str>| (l.to_string(), v.map(str::to_string));
        assert_eq!(apply(&[set("weir::group", Some("DEBUG"))], false), Ok(()));
        assert_eq!(
            SEEN.lock().last().map(String::as_str),
            Some("info,openraft=off,weir::group=debug")
        );
        assert!(matches!(
            apply(&[set("weir", Some("LOUD"))], false),
            Err(Refused::Invalid(_))
        ));
        assert!(matches!(
            apply(&[set(ROOT, None)], false),
            Err(Refused::Invalid(_))
        ));
        assert!(matches!(
            apply(&[set("a,b", Some("INFO"))], false),
            Err(Refused::Invalid(_))
        ));
        let before = SEEN.lock().len();
        apply(&[set(ROOT, Some("WARN"))], true).unwrap();
        assert_eq!(SEEN.lock().len(), before, "validate_only changes nothing");
        apply(&[set("weir::group", None), set(ROOT, Some("warn"))], false).unwrap();
        assert_eq!(
            SEEN.lock().last().map(String::as_str),
            Some("warn,openraft=off")
        );
        let l = loggers().unwrap();
        assert_eq!(l[ROOT], "WARN");
        assert_eq!(l["openraft"], "OFF");
    }
}
