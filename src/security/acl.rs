//! Kafka-style ACLs and the authorizer that checks requests against them.
//!
//! A binding allows or denies one principal (or `User:*`) from one host (or
//! `*`) one operation on resources of one type, named literally (`*` is
//! every name) or by prefix. A request is allowed when some binding allows
//! it and none denies it; deny wins. Read, Write, Delete and Alter imply
//! Describe, and AlterConfigs implies DescribeConfigs, for allow bindings
//! only, as in Kafka. Super users bypass the check. Bindings are stored in
//! `acls.json` in the data dir.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

/// The file holding the bindings.
pub const ACLS_FILE: &str = "acls.json";

/// Kafka's resource types (wire codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ResourceType {
    Topic,
    Group,
    Cluster,
    TransactionalId,
}

impl ResourceType {
    pub fn code(self) -> i8 {
        match self {
            Self::Topic => 2,
            Self::Group => 3,
            Self::Cluster => 4,
            Self::TransactionalId => 5,
        }
    }

    pub fn from_code(c: i8) -> Option<Self> {
        Some(match c {
            2 => Self::Topic,
            3 => Self::Group,
            4 => Self::Cluster,
            5 => Self::TransactionalId,
            _ => return None,
        })
    }

    /// The operations Kafka accepts on this type.
    fn valid(self, op: Operation) -> bool {
        use Operation::*;
        match self {
            Self::Topic => matches!(
                op,
                All | Read
                    | Write
                    | Create
                    | Delete
                    | Alter
                    | Describe
                    | DescribeConfigs
                    | AlterConfigs
            ),
            Self::Group => matches!(op, All | Read | Describe | Delete),
            Self::Cluster => matches!(
                op,
                All | Create
                    | ClusterAction
                    | DescribeConfigs
                    | AlterConfigs
                    | IdempotentWrite
                    | Alter
                    | Describe
            ),
            Self::TransactionalId => matches!(op, All | Describe | Write),
        }
    }
}

/// How a binding's resource name matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PatternType {
    Literal,
    Prefixed,
}

impl PatternType {
    pub fn code(self) -> i8 {
        match self {
            Self::Literal => 3,
            Self::Prefixed => 4,
        }
    }
}

/// Kafka's ACL operations (wire codes 2..=12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Operation {
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    ClusterAction,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
}

impl Operation {
    const CODES: [(i8, Operation); 11] = [
        (2, Self::All),
        (3, Self::Read),
        (4, Self::Write),
        (5, Self::Create),
        (6, Self::Delete),
        (7, Self::Alter),
        (8, Self::Describe),
        (9, Self::ClusterAction),
        (10, Self::DescribeConfigs),
        (11, Self::AlterConfigs),
        (12, Self::IdempotentWrite),
    ];

    pub fn code(self) -> i8 {
        Self::CODES
            .iter()
            .find(|(_, o)| *o == self)
            .map_or(0, |(c, _)| *c)
    }

    pub fn from_code(c: i8) -> Option<Self> {
        Self::CODES.iter().find(|(k, _)| *k == c).map(|(_, o)| *o)
    }

    /// Whether an allow binding for `self` also allows `wanted`.
    fn allows(self, wanted: Operation) -> bool {
        use Operation::*;
        self == All
            || self == wanted
            || (wanted == Describe && matches!(self, Read | Write | Delete | Alter))
            || (wanted == DescribeConfigs && self == AlterConfigs)
    }
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Permission {
    Deny,
    Allow,
}

impl Permission {
    pub fn code(self) -> i8 {
        match self {
            Self::Deny => 2,
            Self::Allow => 3,
        }
    }

    pub fn from_code(c: i8) -> Option<Self> {
        match c {
            2 => Some(Self::Deny),
            3 => Some(Self::Allow),
            _ => None,
        }
    }
}

/// One ACL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub resource_name: String,
    pub pattern_type: PatternType,
    pub principal: String,
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

impl AclBinding {
    /// Why Kafka would refuse this binding, if it would.
    pub fn invalid(&self) -> Option<String> {
        if self.resource_name.is_empty() {
            return Some("the resource name is empty".into());
        }
        if self.resource_type == ResourceType::Cluster && self.resource_name != "kafka-cluster" {
            return Some("the cluster resource is named kafka-cluster".into());
        }
        if !self.resource_type.valid(self.operation) {
            return Some(format!(
                "{:?} is not an operation on {:?} resources",
                self.operation, self.resource_type
            ));
        }
        match self.principal.split_once(':') {
            Some((t, n)) if !t.is_empty() && !n.is_empty() => {}
            _ => {
                return Some(format!(
                    "{:?} is not a principal like User:alice",
                    self.principal
                ))
            }
        }
        if self.host != "*" && self.host.parse::<IpAddr>().is_err() {
            return Some(format!("{:?} is not * or an IP address", self.host));
        }
        None
    }

    fn covers(&self, rtype: ResourceType, name: &str) -> bool {
        self.resource_type == rtype
            && match self.pattern_type {
                PatternType::Literal => self.resource_name == name || self.resource_name == "*",
                PatternType::Prefixed => name.starts_with(&self.resource_name),
            }
    }

    fn applies_to(&self, principal: &str, host: &str) -> bool {
        (self.principal == principal || self.principal == "User:*")
            && (self.host == "*" || self.host == host)
    }
}

/// Kafka's resource pattern filter type (wire codes 1..=4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PatternFilter {
    Any,
    /// Every binding that would apply to the named resource.
    Match,
    Exact(PatternType),
}

impl PatternFilter {
    pub fn from_code(c: i8) -> Option<Self> {
        Some(match c {
            1 => Self::Any,
            2 => Self::Match,
            3 => Self::Exact(PatternType::Literal),
            4 => Self::Exact(PatternType::Prefixed),
            _ => return None,
        })
    }
}

/// A DescribeAcls / DeleteAcls filter; `None` matches anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclFilter {
    pub resource_type: Option<ResourceType>,
    pub resource_name: Option<String>,
    pub pattern: PatternFilter,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: Option<Operation>,
    pub permission: Option<Permission>,
}

impl AclFilter {
    pub fn matches(&self, b: &AclBinding) -> bool {
        if self.resource_type.is_some_and(|t| t != b.resource_type)
            || self.principal.as_ref().is_some_and(|p| *p != b.principal)
            || self.host.as_ref().is_some_and(|h| *h != b.host)
            || self.operation.is_some_and(|o| o != b.operation)
            || self.permission.is_some_and(|p| p != b.permission)
        {
            return false;
        }
        match (self.pattern, &self.resource_name) {
            (PatternFilter::Any, None) => true,
            (PatternFilter::Any, Some(n)) => *n == b.resource_name,
            (PatternFilter::Exact(p), name) => {
                p == b.pattern_type && name.as_ref().is_none_or(|n| *n == b.resource_name)
            }
            (PatternFilter::Match, None) => true,
            (PatternFilter::Match, Some(n)) => match b.pattern_type {
                PatternType::Literal => b.resource_name == *n || b.resource_name == "*",
                PatternType::Prefixed => n.starts_with(&b.resource_name),
            },
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct AclFile {
    version: u32,
    acls: Vec<AclBinding>,
}

/// Errors of the ACL store.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    #[error("cannot read {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("cannot write the ACLs: {0}")]
    Store(#[from] std::io::Error),
}

/// Checks requests against the bindings.
#[derive(Debug)]
pub struct Authorizer {
    enabled: bool,
    super_users: Vec<String>,
    /// `None` in a cluster: the quorum holds the bindings.
    path: Option<PathBuf>,
    acls: RwLock<Vec<AclBinding>>,
    /// Serializes changes (the file is written outside `acls`' lock, which
    /// every request reads).
    writer: parking_lot::Mutex<()>,
}

impl Authorizer {
    /// Opens the store in `data_dir`.
    ///
    /// # Errors
    /// An unreadable or corrupt `acls.json`.
    pub fn open(
        data_dir: &Path,
        enabled: bool,
        super_users: Vec<String>,
    ) -> Result<Self, AclError> {
        let path = data_dir.join(ACLS_FILE);
        let acls = match std::fs::read(&path) {
            Ok(bytes) => {
                let f: AclFile = serde_json::from_slice(&bytes).map_err(|e| AclError::Load {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
                f.acls
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(AclError::Load {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })
            }
        };
        Ok(Self {
            enabled,
            super_users,
            path: Some(path),
            acls: RwLock::new(acls),
            writer: parking_lot::Mutex::new(()),
        })
    }

    /// The authorizer of a broker in a cluster: its bindings come from the
    /// quorum ([`Authorizer::replace`]); an `acls.json` left in `data_dir`
    /// (from a single node) is not read, and a warning says so.
    pub fn for_cluster(data_dir: &Path, enabled: bool, super_users: Vec<String>) -> Self {
        let unused = Self::open(data_dir, enabled, Vec::new()).map(|a| a.all().len());
        if !matches!(unused, Ok(0)) {
            tracing::warn!(
                path = %data_dir.join(ACLS_FILE).display(),
                "this data dir's ACL file is not read in a cluster, whose ACLs live in the \
                 metadata quorum: create them again with CreateAcls"
            );
        }
        Self {
            enabled,
            super_users,
            path: None,
            acls: RwLock::new(Vec::new()),
            writer: parking_lot::Mutex::new(()),
        }
    }

    /// Whether requests are checked at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether `principal` connecting from `host` may do `op` on the
    /// resource.
    pub fn authorize(
        &self,
        principal: &str,
        host: IpAddr,
        op: Operation,
        rtype: ResourceType,
        name: &str,
    ) -> bool {
        if !self.enabled || self.super_users.iter().any(|s| s == principal) {
            return true;
        }
        let host = host.to_canonical().to_string();
        let acls = self.acls.read();
        let mut allowed = false;
        for b in acls
            .iter()
            .filter(|b| b.covers(rtype, name) && b.applies_to(principal, &host))
        {
            match b.permission {
                Permission::Deny if b.operation == Operation::All || b.operation == op => {
                    return false
                }
                Permission::Allow if b.operation.allows(op) => allowed = true,
                _ => {}
            }
        }
        allowed
    }

    /// Whether some resource of `rtype` allows `op` to `principal` (Kafka's
    /// check for idempotent producers without IdempotentWrite on the
    /// cluster: Write on any topic).
    pub fn authorize_any(
        &self,
        principal: &str,
        host: IpAddr,
        op: Operation,
        rtype: ResourceType,
    ) -> bool {
        if !self.enabled || self.super_users.iter().any(|s| s == principal) {
            return true;
        }
        let host_s = host.to_canonical().to_string();
        // Names whose allow binding could apply; checked without the lock
        // held (a read lock is not re-entered).
        let candidates: Vec<String> = self
            .acls
            .read()
            .iter()
            .filter(|b| {
                b.resource_type == rtype
                    && b.permission == Permission::Allow
                    && b.applies_to(principal, &host_s)
                    && b.operation.allows(op)
            })
            .map(|b| b.resource_name.clone())
            .collect();
        candidates
            .iter()
            .any(|n| self.authorize(principal, host, op, rtype, n))
    }

    /// Adds bindings (existing ones are kept once).
    ///
    /// # Errors
    /// The store could not be written; nothing changed.
    pub fn create(&self, new: &[AclBinding]) -> Result<(), AclError> {
        let _writer = self.writer.lock();
        let mut next = self.acls.read().clone();
        add(&mut next, new);
        self.persist(&next)?;
        *self.acls.write() = next;
        Ok(())
    }

    /// Bindings matching `filter`.
    pub fn describe(&self, filter: &AclFilter) -> Vec<AclBinding> {
        self.acls
            .read()
            .iter()
            .filter(|b| filter.matches(b))
            .cloned()
            .collect()
    }

    /// Removes the bindings matching each filter; returns them per filter.
    ///
    /// # Errors
    /// The store could not be written; nothing changed.
    pub fn delete(&self, filters: &[AclFilter]) -> Result<Vec<Vec<AclBinding>>, AclError> {
        let _writer = self.writer.lock();
        let mut next = self.acls.read().clone();
        let removed = remove(&mut next, filters);
        if removed.iter().any(|r| !r.is_empty()) {
            self.persist(&next)?;
            *self.acls.write() = next;
        }
        Ok(removed)
    }

    /// Replaces every binding with a cluster's (its quorum holds them; this
    /// broker's file is not used).
    pub fn replace(&self, acls: Vec<AclBinding>) {
        *self.acls.write() = acls;
    }

    /// Every binding, for backups and the admin API.
    pub fn all(&self) -> Vec<AclBinding> {
        self.acls.read().clone()
    }

    fn persist(&self, acls: &[AclBinding]) -> Result<(), AclError> {
        let Some(path) = &self.path else {
            return Err(AclError::Store(std::io::Error::other(
                "a cluster's ACLs change through its quorum",
            )));
        };
        let file = AclFile {
            version: 1,
            acls: acls.to_vec(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
        super::write_atomically(path, &bytes, 0o600)?;
        Ok(())
    }
}

/// Adds bindings to `acls`, each once (hosts in one spelling per address,
/// as peers are compared).
pub fn add(acls: &mut Vec<AclBinding>, new: &[AclBinding]) {
    for b in new {
        let mut b = b.clone();
        if let Ok(ip) = b.host.parse::<IpAddr>() {
            b.host = ip.to_canonical().to_string();
        }
        if !acls.contains(&b) {
            acls.push(b);
        }
    }
}

/// Removes from `acls` the bindings matching any filter; returns those
/// each filter matched.
pub fn remove(acls: &mut Vec<AclBinding>, filters: &[AclFilter]) -> Vec<Vec<AclBinding>> {
    let removed = filters
        .iter()
        .map(|f| acls.iter().filter(|b| f.matches(b)).cloned().collect())
        .collect();
    acls.retain(|b| !filters.iter().any(|f| f.matches(b)));
    removed
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn binding(
        rtype: ResourceType,
        name: &str,
        pattern: PatternType,
        principal: &str,
        op: Operation,
        perm: Permission,
    ) -> AclBinding {
        AclBinding {
            resource_type: rtype,
            resource_name: name.into(),
            pattern_type: pattern,
            principal: principal.into(),
            host: "*".into(),
            operation: op,
            permission: perm,
        }
    }

    fn ip() -> IpAddr {
        "127.0.0.1".parse().unwrap()
    }

    #[test]
    fn deny_by_default_allow_deny_and_implication() {
        let dir = tempfile::tempdir().unwrap();
        let a = Authorizer::open(dir.path(), true, vec!["User:admin".into()]).unwrap();
        let t = ResourceType::Topic;
        assert!(!a.authorize("User:alice", ip(), Operation::Read, t, "orders"));
        assert!(a.authorize("User:admin", ip(), Operation::Write, t, "orders"));
        a.create(&[
            binding(
                t,
                "ord",
                PatternType::Prefixed,
                "User:alice",
                Operation::Write,
                Permission::Allow,
            ),
            binding(
                t,
                "orders-secret",
                PatternType::Literal,
                "User:alice",
                Operation::All,
                Permission::Deny,
            ),
            binding(
                t,
                "*",
                PatternType::Literal,
                "User:*",
                Operation::Read,
                Permission::Allow,
            ),
        ])
        .unwrap();
        assert!(a.authorize("User:alice", ip(), Operation::Write, t, "orders"));
        assert!(
            a.authorize("User:alice", ip(), Operation::Describe, t, "orders"),
            "write implies describe"
        );
        assert!(
            !a.authorize("User:alice", ip(), Operation::Write, t, "orders-secret"),
            "deny wins"
        );
        assert!(!a.authorize("User:alice", ip(), Operation::Read, t, "orders-secret"));
        assert!(a.authorize("User:bob", ip(), Operation::Read, t, "anything"));
        assert!(!a.authorize("User:bob", ip(), Operation::Write, t, "orders"));
        assert!(!a.authorize(
            "User:alice",
            ip(),
            Operation::Write,
            ResourceType::Group,
            "orders"
        ));
        assert!(a.authorize_any("User:alice", ip(), Operation::Write, t));
        assert!(!a.authorize_any("User:bob", ip(), Operation::Write, t));

        // Persisted, and deleted by filter.
        let b = Authorizer::open(dir.path(), true, vec![]).unwrap();
        assert_eq!(b.all().len(), 3);
        let removed = b
            .delete(&[AclFilter {
                resource_type: Some(t),
                resource_name: Some("orders".into()),
                pattern: PatternFilter::Match,
                principal: None,
                host: None,
                operation: None,
                permission: None,
            }])
            .unwrap();
        assert_eq!(
            removed[0].len(),
            2,
            "the prefixed and the wildcard binding match"
        );
        assert_eq!(
            Authorizer::open(dir.path(), true, vec![])
                .unwrap()
                .all()
                .len(),
            1
        );
    }

    #[test]
    fn host_restrictions_and_validation() {
        let dir = tempfile::tempdir().unwrap();
        let a = Authorizer::open(dir.path(), true, vec![]).unwrap();
        let mut b = binding(
            ResourceType::Group,
            "g",
            PatternType::Literal,
            "User:alice",
            Operation::Read,
            Permission::Allow,
        );
        b.host = "10.0.0.1".into();
        a.create(&[b.clone()]).unwrap();
        assert!(!a.authorize(
            "User:alice",
            ip(),
            Operation::Read,
            ResourceType::Group,
            "g"
        ));
        assert!(a.authorize(
            "User:alice",
            "10.0.0.1".parse().unwrap(),
            Operation::Read,
            ResourceType::Group,
            "g"
        ));
        b.operation = Operation::Write;
        assert!(b.invalid().is_some(), "Write is not a group operation");
        b.operation = Operation::Read;
        b.host = "not-an-ip".into();
        assert!(b.invalid().is_some());
        let off = Authorizer::open(dir.path(), false, vec![]).unwrap();
        assert!(off.authorize(
            "User:x",
            ip(),
            Operation::Alter,
            ResourceType::Cluster,
            "kafka-cluster"
        ));
    }
}
