//! Prognos patch: per-client topic rules, as in Mosquitto's ACL files.
//!
//! A client accepted with a [`TopicAcl`] (see `ConnectDecision::AcceptWithAcl`) may publish to a
//! topic only when a publish rule matches it, and subscribe to a filter only when a subscribe
//! rule covers every topic the filter can match. Deny rules win over allow rules. A refused
//! subscription gets the failure return code in its SUBACK (the connection stays); a refused
//! publish disconnects the client, as the per-device topic prefix does.

/// What one client may publish and subscribe to. Rules are MQTT topic filters (`+`, `#`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicAcl {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    /// Filters denied for both publishing and subscribing, whatever the allow rules say.
    pub deny: Vec<String>,
}

impl TopicAcl {
    /// May the client publish to `topic`?
    pub fn allows_publish(&self, topic: &str) -> bool {
        !self.deny.iter().any(|d| topic_matches(d, topic))
            && self.publish.iter().any(|rule| topic_matches(rule, topic))
    }

    /// May the client subscribe to `filter`? A shared subscription (`$share/group/filter`)
    /// is judged by its filter.
    pub fn allows_subscribe(&self, filter: &str) -> bool {
        let filter = match filter.strip_prefix("$share/") {
            Some(rest) => match rest.split_once('/') {
                Some((_group, f)) => f,
                None => return false,
            },
            None => filter,
        };
        !self.deny.iter().any(|d| filters_overlap(d, filter))
            && self.subscribe.iter().any(|rule| filter_covers(rule, filter))
    }
}

/// MQTT topic matching (§4.7): `+` matches one level, a trailing `#` the parent and every
/// level below; a filter starting with a wildcard does not match a topic starting with `$`.
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Does `rule` match every topic that `filter` matches? Wildcards in `filter` are covered
/// only by wildcards of the rule at the same level (`+` by `+` or `#`, `#` by `#`).
pub fn filter_covers(rule: &str, filter: &str) -> bool {
    if filter.starts_with('$') && (rule.starts_with('+') || rule.starts_with('#')) {
        return false;
    }
    let mut r = rule.split('/');
    let mut f = filter.split('/');
    loop {
        match (r.next(), f.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(level)) if level != "#" => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Could some topic match both filters? Used for deny rules, so that a wildcard subscription
/// cannot reach a denied topic through the back door (`#` against a denied `secret/x`).
pub fn filters_overlap(a: &str, b: &str) -> bool {
    let dollar = |f: &str| f.starts_with('$');
    let wild_start = |f: &str| f.starts_with('+') || f.starts_with('#');
    if (dollar(a) && wild_start(b)) || (dollar(b) && wild_start(a)) {
        return false;
    }
    let mut x = a.split('/');
    let mut y = b.split('/');
    loop {
        match (x.next(), y.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (Some("+"), Some(_)) | (Some(_), Some("+")) => {}
            (Some(p), Some(q)) if p == q => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

// Tested in `prognos-broker` (`auth.rs`): this vendored crate's own test build is not kept.
