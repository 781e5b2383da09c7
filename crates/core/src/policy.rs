//! C2SP tlog-policy files (PROTOCOL.md §10.2): the logs and witnesses an installer trusts and
//! the quorum of cosignatures a checkpoint needs, and checking a checkpoint against them,
//! optionally requiring the quorum to be met by cosignatures younger than a maximum age.

use crate::checkpoint::Checkpoint;
use crate::note::{KeyType, Note, Verifier};
use std::collections::HashMap;

/// Most logs, witnesses and groups a policy may define (tlog-policy recommends at least 32).
pub const MAX_ITEMS: usize = 256;

/// Why a policy file is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("policy line {line}: {reason}")]
pub struct PolicyError {
    /// 1-based line number (0: the file as a whole).
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// Why a checkpoint does not satisfy a policy.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuorumError {
    /// No log of the policy signed it (or its origin is not a policy log's name).
    #[error("the checkpoint is not signed by a log of the policy: {0}")]
    NotFromLog(String),
    /// A listed witness's cosignature is present but does not verify.
    #[error("a cosignature does not verify: {0}")]
    BadCosignature(String),
    /// Too few witnesses cosigned.
    #[error("witness quorum not met: cosigned by {have:?}")]
    NotMet {
        /// The policy witnesses whose cosignatures verified.
        have: Vec<String>,
    },
    /// The quorum is met only counting cosignatures older than the maximum age.
    #[error("witness quorum met only by cosignatures older than {max_age} s (ages: {ages})")]
    Stale {
        /// The maximum age, in seconds.
        max_age: u64,
        /// Each verified cosignature's witness and age, for a person.
        ages: String,
    },
}

#[derive(Clone, Debug)]
enum Member {
    Witness(usize),
    Group(usize),
}

#[derive(Clone, Debug)]
struct Group {
    threshold: usize,
    members: Vec<Member>,
}

/// A parsed policy.
#[derive(Clone, Debug)]
pub struct Policy {
    logs: Vec<Verifier>,
    witnesses: Vec<(String, Verifier)>,
    groups: Vec<Group>,
    /// None: `quorum none`.
    quorum: Option<Member>,
}

impl Policy {
    /// Parses a policy file strictly (tlog-policy): every rule of the spec, names defined
    /// before use, no duplicate keys, log keys of type 0x01 and witness keys of type 0x04
    /// (and no witness with a log's public key), exactly one quorum line.
    pub fn parse(text: &[u8]) -> Result<Policy, PolicyError> {
        let whole = |reason: &str| PolicyError {
            line: 0,
            reason: reason.to_owned(),
        };
        if let Some(b) = text
            .iter()
            .find(|&&b| b != b'\t' && b != b'\n' && (b < 0x20 || b == 0x7f))
        {
            return Err(whole(&format!("control character 0x{b:02x}")));
        }
        let text = std::str::from_utf8(text).map_err(|_| whole("not UTF-8"))?;
        let mut policy = Policy {
            logs: Vec::new(),
            witnesses: Vec::new(),
            groups: Vec::new(),
            quorum: None,
        };
        let mut names: HashMap<String, Member> = HashMap::new();
        let mut quorum_seen = false;
        for (i, raw) in text.lines().enumerate() {
            let err = |reason: String| PolicyError {
                line: i + 1,
                reason,
            };
            let words: Vec<&str> = raw.split([' ', '\t']).filter(|w| !w.is_empty()).collect();
            let Some((&keyword, args)) = words.split_first() else {
                continue;
            };
            if keyword.starts_with('#') {
                continue;
            }
            if policy.logs.len() + policy.witnesses.len() + policy.groups.len() >= 3 * MAX_ITEMS {
                return Err(err("too many definitions".into()));
            }
            match (keyword, args) {
                ("log", [vkey] | [vkey, _]) => {
                    let v = Verifier::parse(vkey).map_err(|e| err(e.to_string()))?;
                    if v.key_type() != KeyType::Ed25519 {
                        return Err(err("a log key must be an Ed25519 (type 0x01) key".into()));
                    }
                    if policy.logs.iter().any(|l| l.public_key() == v.public_key()) {
                        return Err(err("duplicate log key".into()));
                    }
                    policy.logs.push(v);
                }
                ("witness", [name, vkey] | [name, vkey, _]) => {
                    let v = Verifier::parse(vkey).map_err(|e| err(e.to_string()))?;
                    if v.key_type() != KeyType::Cosignature {
                        return Err(err(
                            "a witness key must be a cosignature/v1 (type 0x04) key".into(),
                        ));
                    }
                    let dup = policy
                        .witnesses
                        .iter()
                        .any(|(_, w)| w.public_key() == v.public_key())
                        || policy.logs.iter().any(|l| l.public_key() == v.public_key());
                    if dup {
                        return Err(err("duplicate witness key (or a log's key)".into()));
                    }
                    define(&mut names, name, Member::Witness(policy.witnesses.len()))
                        .map_err(err)?;
                    policy.witnesses.push(((*name).to_owned(), v));
                }
                ("group", [name, k, members @ ..]) if !members.is_empty() => {
                    let n = members.len();
                    let threshold = match *k {
                        "all" => n,
                        "any" => 1,
                        k => crate::checkpoint::parse_decimal(k)
                            .and_then(|k| usize::try_from(k).ok())
                            .filter(|k| (1..=n).contains(k))
                            .ok_or_else(|| {
                                err(format!("threshold {k:?} is not all, any or 1..={n}"))
                            })?,
                    };
                    let mut used = Vec::new();
                    let mut list = Vec::with_capacity(n);
                    for m in members {
                        if used.contains(m) {
                            return Err(err(format!("{m:?} is listed twice")));
                        }
                        used.push(*m);
                        let member = names
                            .get(*m)
                            .ok_or_else(|| err(format!("{m:?} is not defined above")))?;
                        list.push(member.clone());
                    }
                    define(&mut names, name, Member::Group(policy.groups.len())).map_err(err)?;
                    policy.groups.push(Group {
                        threshold,
                        members: list,
                    });
                }
                ("quorum", [name]) => {
                    if quorum_seen {
                        return Err(err("a second quorum line".into()));
                    }
                    quorum_seen = true;
                    policy.quorum = match *name {
                        "none" => None,
                        n => Some(
                            names
                                .get(n)
                                .cloned()
                                .ok_or_else(|| err(format!("{n:?} is not defined above")))?,
                        ),
                    };
                }
                _ => return Err(err(format!("cannot read {:?}", raw.trim()))),
            }
        }
        if !quorum_seen {
            return Err(whole("no quorum line"));
        }
        Ok(policy)
    }

    /// The policy's logs.
    pub fn logs(&self) -> &[Verifier] {
        &self.logs
    }

    /// The policy's witnesses: their names in the policy, and keys.
    pub fn witnesses(&self) -> impl Iterator<Item = (&str, &Verifier)> {
        self.witnesses.iter().map(|(n, v)| (n.as_str(), v))
    }

    /// Checks a signed checkpoint note: signed by a policy log, and cosigned by witnesses
    /// meeting the quorum; with `max_age` (seconds, against `now`), by cosignatures no older
    /// than that. Returns the names of the witnesses that count.
    pub fn check(
        &self,
        note_text: &str,
        now: u64,
        max_age: Option<u64>,
    ) -> Result<Vec<String>, QuorumError> {
        let (checkpoint, note) = Checkpoint::parse(note_text.as_bytes())
            .map_err(|e| QuorumError::NotFromLog(e.to_string()))?;
        let log = self
            .logs
            .iter()
            .find(|l| l.name() == checkpoint.origin)
            .ok_or_else(|| {
                QuorumError::NotFromLog(format!("no policy log is named {:?}", checkpoint.origin))
            })?;
        Checkpoint::verify(note_text.as_bytes(), log)
            .map_err(|e| QuorumError::NotFromLog(e.to_string()))?;
        let times = self.cosigned(&note)?;
        let all: Vec<bool> = times.iter().map(Option::is_some).collect();
        let names = |set: &[bool]| -> Vec<String> {
            self.witnesses
                .iter()
                .zip(set)
                .filter(|(_, s)| **s)
                .map(|((n, _), _)| n.clone())
                .collect()
        };
        if !self.met(&all) {
            return Err(QuorumError::NotMet { have: names(&all) });
        }
        let Some(max_age) = max_age else {
            return Ok(names(&all));
        };
        // A timestamp ahead of now (beyond a minute of clock skew) is not fresh: it would
        // otherwise stay fresh forever.
        let fresh: Vec<bool> = times
            .iter()
            .map(|t| {
                t.is_some_and(|t| t <= now.saturating_add(60) && now.saturating_sub(t) <= max_age)
            })
            .collect();
        if self.met(&fresh) {
            return Ok(names(&fresh));
        }
        let ages = self
            .witnesses
            .iter()
            .zip(&times)
            .filter_map(|((n, _), t)| t.map(|t| format!("{n} {} s", now.saturating_sub(t))))
            .collect::<Vec<_>>()
            .join(", ");
        Err(QuorumError::Stale { max_age, ages })
    }

    /// Per policy witness, the timestamp of its verified cosignature on `note`, if any.
    fn cosigned(&self, note: &Note) -> Result<Vec<Option<u64>>, QuorumError> {
        self.witnesses
            .iter()
            .map(|(_, w)| {
                let present = note
                    .signatures()
                    .iter()
                    .any(|s| s.name == w.name() && s.key_id == w.key_id());
                if !present {
                    return Ok(None);
                }
                let verified = note
                    .verify(&[w])
                    .map_err(|e| QuorumError::BadCosignature(format!("{}: {e}", w.name())))?;
                Ok(verified.first().and_then(|v| v.timestamp))
            })
            .collect()
    }

    /// Whether the witnesses marked in `cosigned` meet the quorum. Groups only name earlier
    /// groups, so one forward pass settles each once (no re-evaluation of shared subgroups).
    fn met(&self, cosigned: &[bool]) -> bool {
        let mut groups: Vec<bool> = Vec::with_capacity(self.groups.len());
        let witnessed = |m: &Member, groups: &[bool]| match m {
            Member::Witness(i) => cosigned[*i],
            Member::Group(g) => groups[*g],
        };
        for group in &self.groups {
            let count = group
                .members
                .iter()
                .filter(|m| witnessed(m, &groups))
                .count();
            groups.push(count >= group.threshold);
        }
        match &self.quorum {
            None => true,
            Some(m) => witnessed(m, &groups),
        }
    }
}

fn define(names: &mut HashMap<String, Member>, name: &str, member: Member) -> Result<(), String> {
    if name == "none" {
        return Err("`none` is reserved".into());
    }
    if names.insert(name.to_owned(), member).is_some() {
        return Err(format!("{name:?} is defined twice"));
    }
    Ok(())
}
